from configcenter.core.secretrefs import find_refs, has_refs, substitute
from configcenter.core.values import SecretRef


def test_placeholders_round_trip_with_what_templates_render() -> None:
    text = f"POSTGRES_PASSWORD={SecretRef('env:SHOP_DB')}\nURL=pg://u:{SecretRef('file:/s/p')}@h\n"
    assert find_refs(text) == ["env:SHOP_DB", "file:/s/p"]
    assert has_refs(text)
    out = substitute(text, lambda ref: {"env:SHOP_DB": "s3cr3t", "file:/s/p": "pw"}[ref])
    assert out == "POSTGRES_PASSWORD=s3cr3t\nURL=pg://u:pw@h\n"


def test_text_without_placeholders_is_untouched() -> None:
    assert find_refs("a=${HOME} b=$secret c=${secret:}") == []
    assert not has_refs("plain")
    assert substitute("plain ${x}", lambda ref: "boom") == "plain ${x}"
