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
