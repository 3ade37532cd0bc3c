"""ci.variable values never reach the push audit or webhook payloads."""

from gitserver.git import push_options


def test_variable_values_are_hidden_and_other_options_kept():
    options = ["ci.variable=TOKEN=s3cret=x", "ci.skip", "topic=x"]
    assert push_options.shown(options) == ["ci.variable=TOKEN=***", "ci.skip", "topic=x"]
