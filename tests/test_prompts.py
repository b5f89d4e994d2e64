import shutil

import pytest

from harness.errors import HarnessError
from harness.prompts import SMOKE_PROMPTS, load_prompts


def test_drawbench(data_dir):
    prompts = load_prompts("drawbench", data_dir)
    assert len(prompts) == 200
    assert len({p.text for p in prompts}) == 200
    cats = {}
    for p in prompts:
        cats[p.category] = cats.get(p.category, 0) + 1
    assert cats["Colors"] == 25 and cats["Rare Words"] == 7 and cats["Gary Marcus et al."] == 10
    assert prompts[0].text == "A red colored car." and prompts[0].id == "000"


def test_parti_read_with_quoting_off(data_dir):
    prompts = load_prompts("parti", data_dir)
    assert len(prompts) == 1632
    giggle = [p for p in prompts if "G I G G L E" in p.text]
    assert len(giggle) == 1
    assert giggle[0].text.startswith('"G I G G L E" painted in thick colorful lettering')
    assert giggle[0].category == "Illustrations" and giggle[0].challenge == "Writing & Symbols"
    assert sum('"' in p.text for p in prompts) > 0
    assert len({p.challenge for p in prompts}) == 11 and len({p.category for p in prompts}) == 12


def test_coco5k_one_caption_per_image_fixed(data_dir):
    a = load_prompts("coco5k", data_dir)
    b = load_prompts("coco5k", data_dir)
    assert len(a) == 5000 and len({p.id for p in a}) == 5000
    assert [p.text for p in a] == [p.text for p in b]  # fixed draw, independent of any run seed
    assert a[0].id == "000000000139" and a[0].extra["file_name"] == "000000000139.jpg"
    assert all(p.text == p.text.strip() and p.text for p in a)


def test_num_prompts_limits(data_dir):
    assert [p.id for p in load_prompts("parti", data_dir, 3)] == ["0000", "0001", "0002"]


def test_smoke_set_needs_no_files(tmp_path):
    prompts = load_prompts("smoke", tmp_path / "nothing-here")
    assert len(prompts) == len(SMOKE_PROMPTS) == 16
    assert {"Colors", "Counting", "Text", "Positional", "Rare Words"} <= {p.category for p in prompts}


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(HarnessError, match=r"drawbench.csv not found; get .*DrawBench"):
        load_prompts("drawbench", tmp_path)


def test_altered_file_is_refused(tmp_path, data_dir):
    shutil.copy(data_dir / "parti_prompts.tsv", tmp_path / "parti_prompts.tsv")
    with open(tmp_path / "parti_prompts.tsv", "a") as f:
        f.write("one more\tAbstract\tBasic\t\n")
    with pytest.raises(HarnessError, match=r"parti_prompts.tsv has sha256 .* expected fab29e41"):
        load_prompts("parti", tmp_path)
