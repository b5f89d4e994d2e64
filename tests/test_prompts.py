import hashlib
import re
import shutil

import pytest

from harness import prompts as prompts_module
from harness.errors import ConfigError, HarnessError
from harness.prompts import (
    BENCHMARKS,
    BUILTIN_BENCHMARKS,
    DRAWBENCH,
    MAX_PROMPT_CHARS,
    SMOKE_PROMPTS,
    Prompt,
    load_prompt_table,
    load_prompts,
    register_prompt_sets,
)


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


# ---- pinned files: line endings -----------------------------------------------------------------------
def _pinned_drawbench(tmp_path, data_dir, change):
    data = change((data_dir / "drawbench.csv").read_bytes())
    (tmp_path / "drawbench.csv").write_bytes(data)
    return tmp_path / "drawbench.csv"


def test_crlf_pinned_file_is_named_and_converting_restores_it(tmp_path, data_dir):
    path = _pinned_drawbench(tmp_path, data_dir, lambda b: b.replace(b"\n", b"\r\n"))
    with pytest.raises(HarnessError) as e:
        load_prompts("drawbench", tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"prompt set 'drawbench': file {path} has Windows (CRLF) line endings, so its sha256 "
                          "differs from the pinned one; convert it to LF (`dos2unix ")
    assert "core.autocrlf=false" in msg
    assert msg.endswith("that is the only difference: converting restores the pinned file")
    # and the advice is right: converting back gives the pinned file
    assert hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest() == DRAWBENCH.sha256


def test_crlf_and_edited_pinned_file_says_it_is_also_altered(tmp_path, data_dir):
    path = _pinned_drawbench(tmp_path, data_dir,
                             lambda b: b.replace(b"A red", b"A blue", 1).replace(b"\n", b"\r\n"))
    with pytest.raises(HarnessError, match=r"^prompt set 'drawbench': file .* has Windows \(CRLF\) line endings") as e:
        load_prompts("drawbench", tmp_path)
    assert "only difference" not in str(e.value)
    assert (f"even converted it would not match the pinned sha256 {DRAWBENCH.sha256}, so it was also altered"
            in str(e.value))
    assert path.is_file()


def test_bom_pinned_file_is_named(tmp_path, data_dir):
    _pinned_drawbench(tmp_path, data_dir, lambda b: b"\xef\xbb\xbf" + b)
    with pytest.raises(HarnessError, match=r"^prompt set 'drawbench': file .* has a UTF-8 byte-order mark \(BOM\) at "
                                           r"its start, so its sha256 differs .* converting restores the pinned file$"):
        load_prompts("drawbench", tmp_path)


def test_other_mismatch_keeps_the_plain_message(tmp_path, data_dir):
    _pinned_drawbench(tmp_path, data_dir, lambda b: b.replace(b"A red", b"A blue", 1))
    with pytest.raises(HarnessError, match=r"^prompt set 'drawbench': file .*drawbench\.csv has sha256 [0-9a-f]{64}, "
                                           r"expected bb80aa24.*it was altered or is another version"):
        load_prompts("drawbench", tmp_path)


# ---- custom prompt sets ---------------------------------------------------------------------------------
@pytest.fixture
def restore_benchmarks():
    """Custom sets registered by a test are gone after it (other test files see only the built-in ones)."""
    before = dict(BENCHMARKS)
    yield
    BENCHMARKS.clear()
    BENCHMARKS.update(before)


def _write(tmp_path, name, text, newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


EXPECTED_WITH_CATEGORY = [Prompt("a1", "a red cube, on a table", "Colors"), Prompt("b.2", 'a sign saying "hi"', "Text"),
                          Prompt("c-3", "two cats", "")]
EXPECTED_NO_CATEGORY = [Prompt(p.id, p.text) for p in EXPECTED_WITH_CATEGORY]


@pytest.mark.parametrize("name, text, expected", [
    ("with-category.csv", 'id,prompt,category\na1,"a red cube, on a table",Colors\nb.2,"a sign saying ""hi""",Text\n'
                          "c-3,two cats,\n", EXPECTED_WITH_CATEGORY),
    ("no-category.csv", 'id,prompt\na1,"a red cube, on a table"\nb.2,"a sign saying ""hi"""\nc-3,two cats\n',
     EXPECTED_NO_CATEGORY),
    # TSV: quoting off, a '"' is kept as it is; columns in any order, header names in any case
    ("with-category.tsv", 'category\tPrompt\tID\nColors\ta red cube, on a table\ta1\nText\ta sign saying "hi"\tb.2\n'
                          "\ttwo cats\tc-3\n", EXPECTED_WITH_CATEGORY),
    ("no-category.tsv", 'id\tprompt\na1\ta red cube, on a table\nb.2\ta sign saying "hi"\nc-3\ttwo cats\n',
     EXPECTED_NO_CATEGORY),
    # neither suffix: the header line decides
    ("sniffed-tab.txt", 'id\tprompt\na1\ta red cube, on a table\nb.2\ta sign saying "hi"\nc-3\ttwo cats\n',
     EXPECTED_NO_CATEGORY),
    ("sniffed-comma", 'id,prompt\na1,"a red cube, on a table"\nb.2,"a sign saying ""hi"""\nc-3,two cats\n',
     EXPECTED_NO_CATEGORY),
    # a BOM, surrounding spaces, blank lines and a spreadsheet's empty row are fine
    ("bom.csv", '\ufeffid,prompt\n\na1 , "a red cube, on a table"\nb.2,"a sign saying ""hi"""  \n,\nc-3,two cats\n\n',
     EXPECTED_NO_CATEGORY),
])
def test_custom_table_round_trips(tmp_path, name, text, expected):
    path = _write(tmp_path, name, text)
    got = load_prompt_table(path, "mine")
    assert got == expected
    assert [p.category for p in got] == [p.category for p in expected]
    assert load_prompt_table(str(path), "mine") == expected  # a str path works too
    # Windows line endings load the same prompts
    assert load_prompt_table(_write(tmp_path, "crlf-" + name, text, newline="\r\n"), "mine") == expected


def test_custom_table_keeps_file_order(tmp_path):
    ids = [f"p{i}" for i in (5, 3, 9, 1, 7)]
    path = _write(tmp_path, "order.csv", "id,prompt\n" + "".join(f"{i},prompt {i}\n" for i in ids))
    assert [p.id for p in load_prompt_table(path, "mine")] == ids


def test_custom_table_accepts_the_longest_prompt(tmp_path):
    text = "x" * MAX_PROMPT_CHARS
    assert load_prompt_table(_write(tmp_path, "long.csv", f"id,prompt\na,{text}\n"), "mine")[0].text == text


def _case(tmp_path, setup):
    return setup(tmp_path) if callable(setup) else _write(tmp_path, *setup)


SWALLOWED = 'id,prompt\na,"a cat\nb,a dog\n' + "c,x\n" * 400  # an unbalanced quote: the rest is one field

BAD_TABLES = [
    ("missing", lambda t: t / "nothing.csv", r"nothing\.csv not found \(a relative path is relative to the working "
     r"directory, .*\); fix prompt_sets\.mine in the config"),
    ("folder", lambda t: t, r" is a folder; point prompt_sets\.mine at a CSV or TSV file"),
    ("empty", ("e.csv", ""), r"e\.csv is empty; it needs a header row with the columns id, prompt"),
    ("blank-lines-only", ("e.csv", "\n\n"), r"e\.csv is empty; "),
    ("header-only", ("h.csv", "id,prompt,category\n"), r"h\.csv has a header but no prompts; add one row per prompt"),
    ("not-utf8", lambda t: (t / "l.csv").write_bytes(b"id,prompt\na,caf\xe9\n") and t / "l.csv",
     r"l\.csv line 2: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"),
    ("missing-id-column", ("m.csv", "prompt,category\na cat,Animals\n"),
     r"m\.csv line 1: missing column\(s\) 'id' \(the header is 'prompt,category'\)"),
    ("missing-prompt-column", ("m.tsv", "id\tcategory\na\tAnimals\n"), r"m\.tsv line 1: missing column\(s\) 'prompt'"),
    ("typo-column", ("t.csv", "id,promt\na,a cat\n"),
     r"t\.csv line 1: unknown column\(s\) 'promt' \(did you mean 'prompt'\?\); the header must name only"),
    ("extra-column", ("x.csv", "id,prompt,seed\na,a cat,3\n"), r"x\.csv line 1: unknown column\(s\) 'seed'"),
    ("duplicate-column", ("d.csv", "id,prompt,Prompt\na,b,c\n"), r"d\.csv line 1: column 'prompt' appears twice"),
    ("tsv-named-csv", ("w.csv", "id\tprompt\na\ta cat\n"),
     r"w\.csv line 1: the header 'id\\tprompt' is separated by tabs, but the file is read as CSV; rename it to end in "
     r"\.tsv"),
    ("too-many-fields", ("f.csv", "id,prompt\na,a cat\nb,a cat, a dog\n"),
     r"f\.csv line 3: 3 fields, but the header has 2 columns \(id, prompt\); .*quote a prompt that holds a comma"),
    ("too-few-fields", ("f.tsv", "id\tprompt\tcategory\na\ta cat\n"), r"f\.tsv line 2: 2 fields, but the header has 3"),
    ("empty-id", ("i.csv", "id,prompt\na,a cat\n ,a dog\n"), r"i\.csv line 3: empty id; give every prompt a unique id"),
    ("unsafe-id", ("u.csv", "id,prompt\na/b,a cat\n"),
     r"u\.csv line 2: id 'a/b' cannot name an image file \(characters other than A-Z a-z 0-9 \. _ -\); ids become "
     r"file names <id>_<sample>\.png"),
    ("unsafe-id-space", ("u.csv", "id,prompt\nmy prompt,a cat\n"), r"u\.csv line 2: id 'my prompt' cannot name"),
    ("id-too-long", ("u.csv", "id,prompt\n" + "a" * 65 + ",a cat\n"),
     r"u\.csv line 2: id 'a{65}' cannot name an image file \(65 characters\)"),
    ("duplicate-id", ("d.tsv", "id\tprompt\na\ta cat\nb\tx\na\ta dog\n"),
     r"d\.tsv line 4: duplicate id 'a', already on line 2; make every id unique"),
    ("duplicate-id-by-case", ("d.csv", "id,prompt\nCat,a cat\ncat,a dog\n"),
     r"d\.csv line 3: duplicate id 'cat', already on line 2 \(as 'Cat': ids that differ only in case"),
    ("empty-prompt", ("p.csv", "id,prompt\na,a cat\nb,   \n"),
     r"p\.csv line 3: empty prompt for id 'b'; write the prompt"),
    ("empty-prompt-quoted", ("p.csv", 'id,prompt,category\na,"",Colors\n'), r"p\.csv line 2: empty prompt for id 'a'"),
    ("overlong-prompt", ("o.csv", "id,prompt\na,a cat\nb," + "y" * (MAX_PROMPT_CHARS + 1) + "\n"),
     rf"o\.csv line 3: the prompt for id 'b' has {MAX_PROMPT_CHARS + 1} characters, more than the {MAX_PROMPT_CHARS} "
     r"any text encoder here reads; this is almost always a quoting accident: an unbalanced '\"' swallows"),
    ("unbalanced-quote-to-the-end", ("q.csv", SWALLOWED),
     r"q\.csv line 2: the prompt for id 'a' has 1613 characters \(it runs from line 2 to line 403\)"),
    ("unbalanced-quote-short", ("q.csv", 'id,prompt\na,"a cat\nb,a dog\n'),
     r"q\.csv line 2: the prompt for id 'a' runs over lines 2-3; this is usually a quoting accident"),
    ("unbalanced-quote-row-too-short", ("q.csv", 'id,prompt,category\na,"a cat,C\nb,a dog,C\n'),
     r"q\.csv line 2: 2 fields, but the header has 3 columns .*the row runs over lines 2-3: an unbalanced"),
]


@pytest.mark.parametrize("setup, message", [c[1:] for c in BAD_TABLES], ids=[c[0] for c in BAD_TABLES])
def test_bad_custom_table_is_one_clear_error(tmp_path, setup, message):
    path = _case(tmp_path, setup)
    with pytest.raises(HarnessError) as e:
        load_prompt_table(path, "mine")
    assert type(e.value) is HarnessError
    assert str(e.value).startswith(f"prompt set 'mine': {path}")
    assert re.match(r"prompt set 'mine': .*?" + message, str(e.value)), str(e.value)


def test_register_and_load_a_custom_set(tmp_path, restore_benchmarks):
    path = _write(tmp_path, "mine.csv", "id,prompt,category\nx1,a red cube,Colors\nx2,two cats,Counting\n")
    register_prompt_sets({"mine": str(path)})
    register_prompt_sets({"mine": str(path)})  # idempotent
    bench = BENCHMARKS["mine"]
    assert (bench.title, bench.category_fields, bench.references) == ("mine", ("category",), None)
    assert bench.paper_tables == ()
    expected = [Prompt("x1", "a red cube", "Colors"), Prompt("x2", "two cats", "Counting")]
    assert load_prompts("mine", tmp_path / "data-dir-does-not-matter") == expected
    assert load_prompts("mine", num_prompts=1) == expected[:1]
    # another path replaces the entry
    other = _write(tmp_path, "other.tsv", "id\tprompt\ny\ta dog\n")
    register_prompt_sets({"mine": str(other)})
    assert load_prompts("mine") == [Prompt("y", "a dog")]
    assert list(BENCHMARKS)[: len(BUILTIN_BENCHMARKS)] == list(BUILTIN_BENCHMARKS)


def test_register_does_not_read_the_file(tmp_path, restore_benchmarks):
    register_prompt_sets({"later": str(tmp_path / "not-yet.csv")})
    assert "later" in BENCHMARKS
    with pytest.raises(HarnessError, match=r"^prompt set 'later': .*not-yet\.csv not found"):
        load_prompts("later")


def test_relative_path_is_relative_to_the_working_directory(tmp_path, monkeypatch, restore_benchmarks):
    _write(tmp_path, "rel.csv", "id,prompt\na,a cat\n")
    monkeypatch.chdir(tmp_path)
    register_prompt_sets({"rel": "rel.csv"})
    assert load_prompts("rel", "elsewhere") == [Prompt("a", "a cat")]


@pytest.mark.parametrize("name", BUILTIN_BENCHMARKS)
def test_builtin_name_is_refused(tmp_path, restore_benchmarks, name):
    before = BENCHMARKS[name]
    with pytest.raises(ConfigError, match=rf"^config key 'prompt_sets\.{name}': '{name}' is the name of a built-in "
                                          r"prompt set .*; pick another name"):
        register_prompt_sets({name: str(tmp_path / "x.csv")})
    assert BENCHMARKS[name] is before


@pytest.mark.parametrize("name", ["Mine", "my set", "-mine", "", "a/b"])
def test_bad_set_name_is_refused(tmp_path, restore_benchmarks, name):
    with pytest.raises(ConfigError, match=rf"^config key 'prompt_sets\.{re.escape(name)}': '{re.escape(name)}' is not "
                                          r"a valid name; use lowercase letters"):
        register_prompt_sets({name: str(tmp_path / "x.csv")})
    assert name not in BENCHMARKS


def test_builtin_names():
    assert BUILTIN_BENCHMARKS == ("drawbench", "parti", "coco5k", "smoke", "micro-drawbench")
    assert prompts_module.MAX_PROMPT_CHARS == 1000
