"""Table renderers (harness/render.py): Markdown, CSV and LaTeX, with the paper's value and the difference."""


def test_table_renderers_write_csv_latex_and_the_paper_difference(monkeypatch):
    from harness import paper
    from harness.stats import Estimate
    from harness.render import Cell, Table, render_csv, render_latex, render_markdown

    monkeypatch.setattr(paper, "paper_values", lambda: {"table1": {"drawbench": {"sdxl": {"hpsv2": 0.280}}}})
    assert paper.paper_value("table1", "drawbench", "sdxl", "hpsv2") == 0.28
    assert paper.paper_value("table1", "drawbench", "sdxl", "aesthetic") is None
    est = Estimate(0.2876, 0.2800, 0.2950, 200)
    cell = Cell(est.fmt(), estimate=est, paper=0.280)
    assert cell.fmt() == "0.288 [0.280, 0.295] (N=200) (paper 0.280, Δ +0.008)"
    table = Table("Table 1: a_b", ["Model", "Steps", "HPS v2"], [["sdxl", "50", cell]],
                  [{"table": "table1", "benchmark": "drawbench", "system": "sdxl", "metric": "hpsv2", "mean": 0.2876,
                    "ci_low": 0.28, "ci_high": 0.295, "n": 200, "paper": 0.28, "diff_vs_paper": 0.0075}])
    assert render_markdown(table, "> banner").splitlines()[0] == "> banner"
    csv_lines = render_csv(table).splitlines()
    assert csv_lines[0].startswith("table,benchmark,system,metric,mean,ci_low,ci_high,n,paper,diff_vs_paper")
    assert csv_lines[1].startswith("table1,drawbench,sdxl,hpsv2,0.2876,0.28,0.295,200,0.28,0.0075")
    tex = render_latex(table, "> **Smoke**")
    assert r"sdxl & 50 & $0.288_{\pm 0.007}$ \\" in tex and r"Table 1: a\_b" in tex and tex.startswith("% Smoke")


def test_set_metric_cells_print_the_paper_value_and_the_difference():
    from harness.render import Cell

    # FID/KID cells carry one value, no estimate: Δ is taken from it (Table 2, CogView3 FID 31.63).
    cell = Cell("30.0000 (N=5000)", value=30.0, paper=31.63, n=5000)
    assert cell.fmt() == "30.0000 (N=5000) (paper 31.630, Δ -1.630)"
    # No measured value: the paper's number alone, never a Δ against nothing.
    assert Cell("–", paper=31.63).fmt() == "– (paper 31.630)"


def test_paper_values_file_holds_tables_1_to_3():
    # harness/paper_values.yaml as shipped (not monkeypatched): the keys paper_value looks up are
    # config/paper.yaml's system names, BENCHMARKS' names, scorer names, and T_r as an integer.
    from harness.paper import paper_time_cost, paper_value, paper_values

    values = paper_values()
    assert values["source"] == "arXiv 2403.05121v1"
    assert paper_value("table1", "drawbench", "cogview3", "imagereward") == 0.847
    assert paper_value("table1", "parti", "stable-cascade", "imagereward") == 1.029
    assert paper_value("table2", "coco5k", "sdxl", "fid") == 26.29
    assert paper_value("table3", "drawbench", 800, "imagereward") == 0.812
    assert paper_value("table3", "drawbench", "800", "imagereward") is None  # rows are T_r integers
    assert paper_value("table3", "drawbench", 500, "aesthetic") is None  # the paper's Table 3 has no Aes
    assert paper_value("table1", "smoke", "cogview3", "imagereward") is None  # smoke tables print no paper values
    assert paper_time_cost("cogview3-distill-8+2") == 1.96
    # 6 systems x 2 benchmarks x 3 metrics; 6 x 4 (FID, Aes, HPS v2, ImageReward); 5 T_r x 2
    count = lambda table: sum(len(cells) for rows in values[table].values() for cells in rows.values())
    assert (count("table1"), count("table2"), count("table3")) == (36, 24, 10)
