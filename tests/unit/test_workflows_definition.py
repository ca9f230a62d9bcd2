"""Load-time refusal: anything the engine does not run is refused, naming construct and line."""

from __future__ import annotations

import textwrap

import pytest

from meridian.embedded.workflows import DefinitionError, load_program


def refused(source: str) -> str:
    with pytest.raises(DefinitionError) as caught:
        load_program("wf", textwrap.dedent(source))
    return str(caught.value)


def test_unknown_step_construct_is_named_with_its_line() -> None:
    message = refused("""\
        main:
          steps:
            - a:
                assign:
                  - x: 1
            - b:
                loop_forever: true
        """)
    assert "`loop_forever`" in message and "line 7" in message


def test_unknown_call_target_is_refused() -> None:
    message = refused("""\
        main:
          steps:
            - a:
                call: googleapis.firestore.v1.projects.databases.documents.get
                args: {name: x}
        """)
    assert "googleapis.firestore" in message and "line 4" in message


def test_unknown_function_in_expression_is_refused() -> None:
    message = refused("""\
        main:
          steps:
            - a:
                return: ${text.levenshtein("a", "b")}
        """)
    assert "text.levenshtein" in message and "line 4" in message


def test_unsupported_exception_policy_and_parallel_keys() -> None:
    assert "exception_policy: stopAll" in refused("""\
        main:
          steps:
            - p:
                parallel:
                  exception_policy: stopAll
                  branches:
                    - a: {steps: [{s: {assign: [{x: 1}]}}]}
        """)


def test_unknown_http_argument_and_missing_url() -> None:
    assert "http.get argument verify" in refused("""\
        main:
          steps:
            - a:
                call: http.get
                args: {url: "http://x", verify: false}
        """)
    assert "needs argument `url`" in refused("""\
        main:
          steps:
            - a:
                call: http.get
                args: {headers: {}}
        """)


def test_bad_jumps_and_loop_controls() -> None:
    assert "nowhere" in refused("""\
        main:
          steps:
            - a:
                next: nowhere
        """)
    assert "outside a for loop" in refused("""\
        main:
          steps:
            - a:
                next: break
        """)


def test_expression_syntax_error_names_the_line() -> None:
    message = refused("""\
        main:
          steps:
            - a:
                assign:
                  - x: ${1 +}
        """)
    assert "line 5" in message


def test_return_inside_a_parallel_branch_and_two_actions_in_a_step() -> None:
    assert "return inside a parallel branch" in refused("""\
        main:
          steps:
            - p:
                parallel:
                  branches:
                    - a: {steps: [{r: {return: 1}}]}
        """)
    assert "assign with call" in refused("""\
        main:
          steps:
            - a:
                assign: [{x: 1}]
                call: sys.log
        """)


def test_subworkflow_called_in_an_expression_is_refused() -> None:
    assert "subworkflow call helper()" in refused("""\
        main:
          steps:
            - a: {return: "${helper(1)}"}
        helper:
          params: [x]
          steps:
            - r: {return: "${x}"}
        """)


def test_missing_main_and_invalid_yaml() -> None:
    assert "no `main`" in refused("other:\n  steps:\n    - a: {return: 1}\n")
    assert "line 3" in refused("main:\n  steps:\n    - a: {return: [1}\n")


def test_json_definitions_load_too() -> None:
    program = load_program("wf", '{"main": {"steps": [{"a": {"return": "${1 + 1}"}}]}}')
    assert "main" in program.workflows


def test_a_bare_step_list_is_an_implicit_main() -> None:
    program = load_program("wf", "- a:\n    return: 1\n")
    assert list(program.workflows) == ["main"]
