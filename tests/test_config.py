"""The rule file: ${VAR} expansion, durations, defaults and default modes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamheal.config import Settings, describe_invalid_uri, load_settings
from streamheal.errors import RuleFileError, RuleFileProblem


LOAD_TIMEOUT_S = 10.0
ONE_RULE = "  - {name: a, kind: required, collection: users, fields: [email]}\n"


def write_rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_with_engine(tmp_path: Path, engine: str) -> Settings:
    engine_block = f"engine:\n{engine}" if engine else ""
    path = write_rules(
        tmp_path, f"mongodb:\n  database: shop\n{engine_block}rules:\n{ONE_RULE}"
    )
    return load_settings(path, environ={})


class TestVariables:
    @pytest.mark.parametrize(
        ("template", "environ", "expected"),
        [
            ("${HOST}", {"HOST": "db1"}, "db1"),
            ("${HOST}", {"HOST": ""}, ""),
            ("${HOST:-db9}", {"HOST": "db1"}, "db1"),
            ("${HOST:-db9}", {"HOST": ""}, "db9"),
            ("${HOST:-db9}", {}, "db9"),
            ("${HOST:-}", {}, ""),
            ("${HOST:-}", {"HOST": ""}, ""),
            (
                "mongodb://${USER}:${PW:-none}@${HOST:-localhost}:27017/?w=1",
                {"USER": "app", "PW": "", "HOST": ""},
                "mongodb://app:none@localhost:27017/?w=1",
            ),
            (
                "${SCHEME:-mongodb}://${HOST}/",
                {"SCHEME": "mongodb+srv", "HOST": "c.example.net"},
                "mongodb+srv://c.example.net/",
            ),
            ("p$${w}d", {"w": "x"}, "p${w}d"),
            ("$${HOST}-${HOST}", {"HOST": "db1"}, "${HOST}-db1"),
            ("$$x", {}, "$$x"),
        ],
        ids=[
            "set",
            "set but empty",
            "set, with a default",
            "empty takes the default",
            "unset takes the default",
            "unset, empty default",
            "empty, empty default",
            "several in a longer string",
            "default at the start",
            "a literal ${ written $${",
            "escaped beside expanded",
            "other dollars kept",
        ],
    )
    def test_a_variable_in_a_string_is_expanded(
        self, tmp_path: Path, template: str, environ: dict[str, str], expected: str
    ) -> None:
        path = write_rules(
            tmp_path,
            f"mongodb:\n  uri: '{template}'\n  database: shop\nrules:\n{ONE_RULE}",
        )

        settings = load_settings(path, environ=environ)

        assert settings.mongodb.uri == expected

    def test_variables_in_a_list_are_expanded_item_by_item(
        self, tmp_path: Path
    ) -> None:
        path = write_rules(
            tmp_path,
            "mongodb:\n  database: shop\nrules:\n"
            "  - name: a\n    kind: required\n    collection: users\n"
            "    fields: ['${FIRST}', '${SECOND:-email}', 'x_${THIRD:-3}']\n",
        )

        settings = load_settings(path, environ={"FIRST": "name", "THIRD": ""})

        assert settings.rules[0].model_dump()["fields"] == ["name", "email", "x_3"]

    def test_an_unset_variable_without_a_default_names_file_line_and_field(
        self, tmp_path: Path
    ) -> None:
        path = write_rules(
            tmp_path,
            "mongodb:\n  uri: 'mongodb://${DB_HOST}/'\n  database: shop\n"
            "rules:\n"
            "  - name: a\n    kind: required\n    collection: users\n"
            "    fields: [email, '${EXTRA_FIELD}']\n",
        )

        with pytest.raises(RuleFileError) as caught:
            load_settings(path, environ={"EXTRA": "not the same name"})

        assert caught.value.problems == [
            RuleFileProblem(
                str(path),
                2,
                "mongodb.uri",
                "the environment variable DB_HOST is not set and has no default "
                "(write ${DB_HOST:-default} to give one).",
            ),
            RuleFileProblem(
                str(path),
                8,
                "rules[0].fields[1]",
                "the environment variable EXTRA_FIELD is not set and has no "
                "default (write ${EXTRA_FIELD:-default} to give one).",
            ),
        ]

    def test_the_process_environment_is_used_when_none_is_given(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("STREAMHEAL_TEST_DATABASE", "")
        path = write_rules(
            tmp_path,
            "mongodb:\n  database: '${STREAMHEAL_TEST_DATABASE:-fallback}'\n"
            f"rules:\n{ONE_RULE}",
        )

        settings = load_settings(path)

        assert settings.mongodb.database == "fallback"


class TestDurations:
    @pytest.mark.parametrize(
        ("written", "seconds"),
        [
            ("500ms", 0.5),
            ("30s", 30.0),
            ("2m", 120.0),
            ("1h", 3600.0),
            ("45", 45.0),
            ("2.5", 2.5),
            ("'10'", 10.0),
            ("0", 0.0),
        ],
    )
    def test_a_duration_is_read_in_seconds(
        self, tmp_path: Path, written: str, seconds: float
    ) -> None:
        settings = load_with_engine(tmp_path, f"  fix_delay: {written}\n")

        assert settings.engine.fix_delay == seconds

    @pytest.mark.parametrize("written", ["0", "500ms", "0.9"])
    def test_a_sweep_interval_under_a_second_is_refused(
        self, tmp_path: Path, written: str
    ) -> None:
        with pytest.raises(RuleFileError) as caught:
            load_with_engine(tmp_path, f"  sweep_interval: {written}\n")

        assert [(p.line, p.field, p.message) for p in caught.value.problems] == [
            (
                4,
                "engine.sweep_interval",
                "a sweep reads every watched collection, so sweeps must be at "
                "least 1 s apart.",
            )
        ]

    @pytest.mark.parametrize(
        ("written", "message"),
        [
            ("soon", "expected a duration such as 500ms, 30s or 2m, not 'soon'."),
            ("5 days", "expected a duration such as 500ms, 30s or 2m, not '5 days'."),
            ("-5s", "expected a duration such as 500ms, 30s or 2m, not '-5s'."),
            ("''", "expected a duration such as 500ms, 30s or 2m, not ''."),
            ("true", "expected a duration such as 500ms, 30s or 2m."),
            ("-1", "a duration cannot be negative."),
        ],
    )
    def test_a_bad_duration_names_line_field_and_value(
        self, tmp_path: Path, written: str, message: str
    ) -> None:
        with pytest.raises(RuleFileError) as caught:
            load_with_engine(tmp_path, f"  fix_delay: {written}\n")

        assert [(p.line, p.field, p.message) for p in caught.value.problems] == [
            (4, "engine.fix_delay", message)
        ]


class TestDefaults:
    def test_the_engine_defaults_are_those_the_readme_shows(
        self, tmp_path: Path
    ) -> None:
        path = write_rules(tmp_path, f"mongodb:\n  database: shop\nrules:\n{ONE_RULE}")

        engine = load_settings(path, environ={}).engine

        assert (
            engine.sweep_interval,
            engine.fix_delay,
            engine.queue_max,
            engine.auto_fix,
            engine.dry_run,
            engine.backup,
            engine.max_docs_per_fix,
        ) == (30.0, 2.0, 100, False, True, True, 100)

    def test_the_dashboard_listens_on_loopback_port_5000_by_default(
        self, tmp_path: Path
    ) -> None:
        path = write_rules(tmp_path, f"mongodb:\n  database: shop\nrules:\n{ONE_RULE}")

        dashboard = load_settings(path, environ={}).dashboard

        assert (dashboard.host, dashboard.port) == ("127.0.0.1", 5000)

    @pytest.mark.parametrize(
        ("engine", "mode"),
        [
            ("", "detect"),
            ("  dry_run: false\n", "detect"),
            ("  auto_fix: true\n", "dry_run"),
            ("  auto_fix: true\n  dry_run: true\n", "dry_run"),
            ("  auto_fix: true\n  dry_run: false\n", "fix"),
        ],
        ids=["defaults", "dry_run off alone", "auto_fix", "both on", "fix"],
    )
    def test_a_rule_without_mode_follows_the_engine(
        self, tmp_path: Path, engine: str, mode: str
    ) -> None:
        settings = load_with_engine(tmp_path, engine)

        assert [rule.mode for rule in settings.build_rules()] == [mode]

    @pytest.mark.parametrize("mode", ["detect", "dry_run", "fix"])
    def test_a_rule_with_mode_keeps_it_whatever_the_engine_says(
        self, tmp_path: Path, mode: str
    ) -> None:
        path = write_rules(
            tmp_path,
            "mongodb:\n  database: shop\nengine:\n  auto_fix: true\n"
            "  dry_run: false\nrules:\n"
            f"  - {{name: a, kind: required, collection: users, fields: [email], "
            f"mode: {mode}}}\n",
        )

        settings = load_settings(path, environ={})

        assert [rule.mode for rule in settings.build_rules()] == [mode]


class TestInvalidUriMessages:
    ENCODING_HINT = (
        " A user name or password holding / : @ or % must be percent-encoded, "
        "for instance with urllib.parse.quote_plus."
    )

    def test_the_drivers_reason_is_kept_when_it_holds_no_secret(self) -> None:
        exc = ValueError("Port must be an integer between 0 and 65535")

        message = describe_invalid_uri("mongodb://u:pw0rd@h:99999/", exc)

        assert message == (
            "it is not a valid MongoDB connection string "
            "(Port must be an integer between 0 and 65535)."
        )

    @pytest.mark.parametrize(
        ("uri", "echoed", "hint"),
        [
            ("mongodb://u:pa/ss@h:1/", "pa/ss", ENCODING_HINT),
            ("mongodb://u:p%40ss@h:1/", "p@ss", ""),
            ("mongodb://u:p@ss@h:1/", "p@ss", ENCODING_HINT),
            (
                "mongodb://h/?tlsCertificateKeyFilePassword=k3y&tls=true",
                "k3y",
                "",
            ),
            (
                "mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:t0k3n",
                "t0k3n",
                "",
            ),
        ],
        ids=["unescaped /", "decoded", "unescaped @", "key file", "session token"],
    )
    def test_a_reason_repeating_a_secret_is_replaced(
        self, uri: str, echoed: str, hint: str
    ) -> None:
        """Should a driver ever quote the string, no secret of it is shown."""
        exc = ValueError(f"cannot use {echoed!r} here")

        message = describe_invalid_uri(uri, exc)

        assert message == (
            "it is not a valid MongoDB connection string "
            f"(the driver could not parse it).{hint}"
        )


class TestAliases:
    def test_a_fragment_reused_through_an_anchor_and_alias_loads(
        self, tmp_path: Path
    ) -> None:
        path = write_rules(
            tmp_path,
            "mongodb:\n  database: shop\nrules:\n"
            "  - name: a\n    kind: required\n    collection: users\n"
            "    fields: &contact [email, phone]\n"
            "  - name: b\n    kind: required\n    collection: customers\n"
            "    fields: *contact\n",
        )

        settings = load_settings(path, environ={})

        assert [
            (rule.name, rule.model_dump()["fields"]) for rule in settings.rules
        ] == [("a", ["email", "phone"]), ("b", ["email", "phone"])]

    async def test_nested_aliases_expanding_to_millions_stop_at_once(
        self, tmp_path: Path
    ) -> None:
        """A "billion laughs" file is refused at the alias that passes the limit."""
        nine = ", ".join(["lol"] * 9)
        levels = "".join(
            f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
            for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
        )
        # Expanded, i holds 9**9 (387,420,489) values. Counting a as 10, b as
        # 91 and so on, the second *e on line 6 is the first to pass 100,000.
        path = write_rules(tmp_path, f"a: &a [{nine}]\n{levels}")

        with pytest.raises(RuleFileError) as caught:
            await asyncio.wait_for(
                asyncio.to_thread(load_settings, path, environ={}),
                LOAD_TIMEOUT_S,
            )

        assert caught.value.problems == [
            RuleFileProblem(
                str(path),
                6,
                "(syntax)",
                "aliases here expand to more than 100,000 values; a rule file "
                "this large is not supported.",
            )
        ]

    def test_an_alias_inside_its_own_anchor_is_a_problem(self, tmp_path: Path) -> None:
        path = write_rules(tmp_path, "rules: &loop\n  - *loop\n")

        with pytest.raises(RuleFileError) as caught:
            load_settings(path, environ={})

        assert caught.value.problems == [
            RuleFileProblem(
                str(path),
                2,
                "(syntax)",
                "the alias *loop is inside the value it names; a rule file "
                "cannot refer to itself.",
            )
        ]


class TestTypeMistakes:
    def test_each_says_what_was_expected_and_what_was_found(
        self, tmp_path: Path
    ) -> None:
        path = write_rules(
            tmp_path,
            "mongodb:\n  database: shop\n"
            "engine:\n  queue_max: lots\n  auto_fix: maybe\n"
            "dashboard: [1, 2]\n"
            "rules:\n"
            "  - {name: a, kind: required, collection: users, fields: x}\n",
        )

        with pytest.raises(RuleFileError) as caught:
            load_settings(path, environ={})

        assert [(p.line, p.field, p.message) for p in caught.value.problems] == [
            (4, "engine.queue_max", "expected a whole number, not 'lots'."),
            (5, "engine.auto_fix", "expected true or false, not 'maybe'."),
            (6, "dashboard", "expected a mapping (`key: value` lines), not a list."),
            (
                8,
                "rules[0].fields",
                "expected a list (`[a, b]` or lines starting with `- `), not 'x'.",
            ),
        ]
