"""The expansion report (harness/expansion_report.py): truncation counts at each system's text limit."""

from tests.conftest import smoke_config


def test_truncation_counts_use_each_systems_text_limit(tmp_path):
    from harness.expansion_report import truncation_counts

    cfg = smoke_config(tmp_path)
    short, long = "a cat", " ".join(["a very detailed red cat"] * 30)  # 150 words: over 77 CLIP tokens, under 225 T5
    clip = truncation_counts(cfg, "sdxl", [short, short], [short, long])
    assert (clip["limit"], clip["original"], clip["expanded"]) == (77, 0, 1)
    t5 = truncation_counts(cfg, "cogview3", [short, short], [long, long + " " + long])
    assert t5["limit"] == 225 and t5["original"] == 0 and t5["expanded"] >= 1
