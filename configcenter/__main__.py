from configcenter.cli import main

main()
