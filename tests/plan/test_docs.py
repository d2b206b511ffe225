"""docs/plan.md's tables are what the planner computes today."""

from pathlib import Path

from trillion.plan.render import doc_tables

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plan.md"


def test_doc_tables_are_fresh():
    text = DOCS.read_text()
    for table in doc_tables().split("\n\n"):
        assert table in text, "docs/plan.md is stale: paste the output of doc_tables() (command in the doc)"
