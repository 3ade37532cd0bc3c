"""``.gitserver/pipeline.toml`` parsing: good files, and bad ones named by line."""

from __future__ import annotations

import pytest

from gitserver.pipelines.build import Coordinates, step_environment
from gitserver.pipelines.pipelinefile import PipelineFileError, StepSpec, parse_pipeline

GOOD = """\
# comment
[[steps]]
name = "unit tests"
command = "make test"
timeout = 600
env = { MODE = "ci", LEVEL = "2" }

[[steps]]
name = "lint"
command = ["ruff", "check", "."]
"""


def test_good_file() -> None:
    assert parse_pipeline(GOOD).steps == [
        StepSpec(name="unit tests", argv=("/bin/sh", "-c", "make test"), timeout=600.0,
                 env=(("LEVEL", "2"), ("MODE", "ci")), line=2),
        StepSpec(name="lint", argv=("ruff", "check", "."), timeout=None, env=(), line=8),
    ]



def test_tags_are_built_only_when_the_file_opts_in() -> None:
    assert parse_pipeline(GOOD).build_tags is False
    spec = parse_pipeline("build_tags = true\n" + GOOD)
    assert spec.build_tags is True and [s.name for s in spec.steps] == ["unit tests", "lint"]


def test_network_is_none_unless_the_file_or_the_step_asks() -> None:
    assert {s.network for s in parse_pipeline(GOOD).steps} == {"none"}
    spec = parse_pipeline('network = "host"\n' + GOOD + 'network = "none"\n')
    assert [(s.name, s.network) for s in spec.steps] == [("unit tests", "host"), ("lint", "none")]


@pytest.mark.parametrize(("text", "message"), [
    ('network = "internet"\n' + GOOD,
     "line 1: 'network' must be \"none\" (no network, the default) or \"host\""),
    ('[[steps]]\nname = "a"\ncommand = "x"\nnetwork = true\n',
     "line 4: step 1: 'network' must be \"none\" (no network, the default) or \"host\""),
    # TOML syntax errors: tomllib's reason, with line and column.
    ('[[steps]]\nname = "a"\ncommand = \n', "line 3, column 11: Invalid value"),
    ('[[steps]]\nname = "a"\ncommand = "x"\nname = "b"\n', "line 4, column"),
    ('[[steps]\n', "line 1, column"),
    # Structure.
    ("", "line 1: no [[steps]] defined"),
    ('title = "x"\n[[steps]]\nname = "a"\ncommand = "x"\n',
     "line 1: unknown top-level key 'title' (allowed: [[steps]], build_tags, network)"),
    ('steps = "make"\n', "line 1: 'steps' must be an array of tables, written [[steps]]"),
    ('[steps.build]\ncommand = "x"\n', "line 1: 'steps' must be an array of tables, written [[steps]]"),
    # Step fields, each named with the line of the offending key.
    ('[[steps]]\nname = "a"\ncommand = "x"\n\n[[steps]]\ncommand = "y"\n',
     "line 5: step 2: 'name' is required"),
    ('[[steps]]\nname = "../../etc"\ncommand = "x"\n', "line 2: step 1: 'name' is required: 1-100"),
    ('[[steps]]\nname = "a"\n', "line 1: step 1: 'command' is required"),
    ('[[steps]]\nname = "a"\ncommand = []\n', "line 3: step 1: 'command' is required"),
    ('[[steps]]\nname = "a"\ncommand = ["make", 1]\n', "line 3: step 1: 'command' is required"),
    ('[[steps]]\nname = "a"\ncommand = "   "\n', "line 3: step 1: 'command' is required"),
    ('[[steps]]\nname = "a"\ncommand = "x"\ntimeout = 0\n', "line 4: step 1: 'timeout' must be a positive"),
    ('[[steps]]\nname = "a"\ncommand = "x"\ntimeout = true\n', "line 4: step 1: 'timeout' must be a positive"),
    ('[[steps]]\nname = "a"\ncommand = "x"\ntimeout = "10"\n', "line 4: step 1: 'timeout' must be a positive"),
    ('[[steps]]\nname = "a"\ncommand = "x"\nenv = "A=1"\n', "line 4: step 1: 'env' must be a table"),
    ('[[steps]]\nname = "a"\ncommand = "x"\nenv = { GITSERVER_TAG = "x" }\n',
     "line 4: step 1: env name 'GITSERVER_TAG' is not allowed"),
    ('[[steps]]\nname = "a"\ncommand = "x"\nenv = { "A B" = "x" }\n', "line 4: step 1: env name 'A B'"),
    ('[[steps]]\nname = "a"\ncommand = "x"\nenv = { A = 1 }\n', "line 4: step 1: env A must be a string"),
    ('[[steps]]\nname = "a"\ncommand = "x"\nimage = "alpine"\n',
     "line 4: step 1: unknown key 'image' (allowed: command, env, name, network, timeout)"),
    ('[[steps]]\nname = "a"\ncommand = "x"\n[[steps]]\nname = "a"\ncommand = "y"\n',
     "line 4: step name 'a' is used twice"),
    ("[[steps]]\nname = 'a'\ncommand = \"x\"\n" * 51, "51 steps; at most 50 are allowed"),
    ('build_tags = "yes"\n[[steps]]\nname = "a"\ncommand = "x"\n', "line 1: 'build_tags' must be true or false"),
])
def test_bad_files_name_the_line(text: str, message: str) -> None:
    with pytest.raises(PipelineFileError) as info:
        parse_pipeline(text)
    assert str(info.value).startswith(".gitserver/pipeline.toml: ")
    assert message in str(info.value), str(info.value)


def test_step_environment_is_clean_and_coordinates_win(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = StepSpec(name="a", argv=("true",), env=(("MODE", "ci"), ("PATH", "/opt/bin")))
    coords = Coordinates(repo="t/r", ref="refs/heads/main", commit="c" * 40, tag="repour-x",
                         readonly_url="http://h/git/t/r.git")
    env = step_environment(spec, coords, tmp_path)
    assert env == {"PATH": "/opt/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "LANG": "C.UTF-8",
                   "MODE": "ci", "GITSERVER_REPO": "t/r", "GITSERVER_REF": "refs/heads/main",
                   "GITSERVER_COMMIT": "c" * 40, "GITSERVER_TAG": "repour-x",
                   "GITSERVER_READONLY_URL": "http://h/git/t/r.git"}
