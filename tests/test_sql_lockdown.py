"""`dno sql` and `dno pairs --sql` reach the run's artifacts (or the pair tables) and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import EXAMPLE_ROWS, write_example
from dno_data.errors import DnoError
from dno_data.ids import file_sha256


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    write_example(run / "prompts.parquet", "prompts")
    write_example(run / "iter-01" / "samples.parquet", "samples")
    write_example(run / "iter-01" / "pairs.parquet", "pairs")
    (tmp_path / "outside.csv").write_text("secret\n42\n")
    write_example(tmp_path / "outside.parquet", "pairs")
    return run


def _attempts(tmp_path: Path, run: Path) -> dict[str, str]:
    artifact = run / "iter-01" / "samples.parquet"
    return {
        "copy outside": f"COPY (SELECT 1 AS x) TO '{tmp_path / 'out.csv'}'",
        "copy onto an artifact": f"COPY (SELECT 1 AS x) TO '{artifact}' (FORMAT parquet, USE_TMP_FILE false)",
        "export": f"EXPORT DATABASE '{tmp_path / 'export'}'",
        "read_csv outside": f"SELECT * FROM read_csv('{tmp_path / 'outside.csv'}')",
        "read_text": "SELECT * FROM read_text('/etc/passwd')",
        "glob": "SELECT * FROM glob('/root/**')",
        "read_parquet outside": f"SELECT * FROM read_parquet('{tmp_path / 'outside.parquet'}')",
        "attach": f"ATTACH '{tmp_path / 'new.db'}' AS other",
        "install": "INSTALL httpfs",
        "load": "LOAD httpfs",
        "re-enable": "SET enable_external_access = true",
        "widen": "SET allowed_directories = ['/']",
        "unlock": "SET lock_configuration = false",
        "select then copy": f"SELECT 1; COPY (SELECT 1) TO '{tmp_path / 'out2.csv'}'",
    }


@pytest.mark.parametrize("name", list(_attempts(Path("/t"), Path("/r"))))
def test_dno_sql_refuses_to_reach_outside(tmp_path, run_dir, name):
    from dno_data.stages.sql import SqlConfig, run

    before = file_sha256(run_dir / "iter-01" / "samples.parquet")
    with pytest.raises(DnoError) as info:
        run(SqlConfig.from_options(run=run_dir, query=_attempts(tmp_path, run_dir)[name]))
    assert "\n" not in str(info.value)
    assert file_sha256(run_dir / "iter-01" / "samples.parquet") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.csv", "outside.parquet", "run"]
    # the views keep working
    df = run(SqlConfig.from_options(run=run_dir, query="SELECT (SELECT count(*) FROM samples) AS s, (SELECT count(*) FROM pairs) AS p, "
                                "(SELECT count(*) FROM prompts) AS q", format="csv"))
    assert df.row(0) == (2, 1, 2)


def test_dno_sql_refusal_is_one_error_line(tmp_path, run_dir, cli):
    proc = cli("sql", "--run", run_dir, f"SELECT * FROM read_csv('{tmp_path / 'outside.csv'}')")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert "42" not in proc.stdout + proc.stderr


def test_a_file_of_another_kind_is_not_served_as_a_view(tmp_path, run_dir):
    from dno_data.stages.sql import SqlConfig, run

    write_example(run_dir / "iter-02" / "samples.parquet", "pairs")
    with pytest.raises(DnoError, match="iter-02"):
        run(SqlConfig.from_options(run=run_dir, query="SELECT count(*) FROM samples"))
    (run_dir / "iter-02" / "samples.parquet").write_bytes(b"not parquet")
    with pytest.raises(DnoError, match="iter-02"):
        run(SqlConfig.from_options(run=run_dir, query="SELECT count(*) FROM samples"))


@pytest.mark.parametrize("name", ["copy outside", "read_csv outside", "attach", "install", "re-enable", "glob",
                                  "read_parquet outside"])
def test_pairs_sql_rule_refuses_to_reach_outside(tmp_path, name):
    import pyarrow as pa

    from dno_data.artifacts import to_table
    from dno_data.pairs import build_pairs

    (tmp_path / "outside.csv").write_text("secret\n42\n")
    write_example(tmp_path / "outside.parquet", "pairs")
    rule = tmp_path / "rule.sql"
    rule.write_text(_attempts(tmp_path, tmp_path / "run")[name])
    samples = to_table(EXAMPLE_ROWS["samples"](), "samples")
    judgments = to_table(EXAMPLE_ROWS["judgments"](), "judgments")
    with pytest.raises(DnoError) as info:
        build_pairs(samples, judgments, sql_file=rule)
    assert "rule.sql" in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.csv", "outside.parquet", "rule.sql"]
    assert isinstance(samples, pa.Table)


def test_pairs_sql_rule_still_sees_its_tables(tmp_path):
    from dno_data.artifacts import to_table
    from dno_data.pairs import build_pairs

    rule = tmp_path / "rule.sql"
    rule.write_text("SELECT prompt_id, max_by(sample_id, score) AS chosen_sample_id, "
                    "min_by(sample_id, score) AS rejected_sample_id FROM candidates GROUP BY prompt_id "
                    "HAVING count(*) > 1 AND max(score) > min(score)")
    samples = to_table(EXAMPLE_ROWS["samples"](), "samples")
    judgments = to_table(EXAMPLE_ROWS["judgments"](), "judgments")
    result = build_pairs(samples, judgments, sql_file=rule)
    assert result.table.num_rows <= 1
