"""The local stack's settings file: `takemeter up` writes it, the other commands read it."""

from __future__ import annotations

import stat

from backend.config import load_settings
from takemeter import stack_settings
from takemeter.stack import LabelStudioLogin

STACK = {
    "LABEL_STUDIO_URL": "http://127.0.0.1:8080",
    "LABEL_STUDIO_API_KEY": "tok'en with spaces",
    "MODEL_DIR": "/data/my stack/model-data",
    "BASE_MODEL": "/models/minilm",
    "LLM_API_KEY": "not-written",
}


def stack_in(folder) -> None:
    stack_settings.write(folder / ".stack" / "env", STACK)


def test_the_file_round_trips_is_private_and_holds_only_what_commands_share(tmp_path):
    path = tmp_path / ".stack" / "env"
    stack_settings.write(path, STACK)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    read = stack_settings.read(path)
    assert read == {k: v for k, v in STACK.items() if k != "LLM_API_KEY"}


def test_commands_without_a_label_studio_take_the_stacks_settings_and_say_so(tmp_path):
    stack_in(tmp_path)
    env, said = stack_settings.fill({"PATH": "/bin", "MODEL_DIR": "/mine"}, cwd=tmp_path)
    assert env["LABEL_STUDIO_URL"] == STACK["LABEL_STUDIO_URL"]
    assert env["LABEL_STUDIO_API_KEY"] == STACK["LABEL_STUDIO_API_KEY"]
    assert env["MODEL_DIR"] == "/mine"  # the environment wins where it has a value
    assert said.startswith("settings: BASE_MODEL, LABEL_STUDIO_API_KEY, LABEL_STUDIO_URL ")
    assert str(tmp_path / ".stack" / "env") in said
    assert STACK["LABEL_STUDIO_API_KEY"] not in said
    settings = load_settings(env)
    assert settings.label_studio_url == STACK["LABEL_STUDIO_URL"]


def test_a_label_studio_named_in_the_environment_takes_nothing_from_the_stack(tmp_path):
    stack_in(tmp_path)
    for named in ({"LABEL_STUDIO_URL": "http://other:8080"}, {"LABEL_STUDIO_API_KEY": "k"}):
        env, said = stack_settings.fill(named, cwd=tmp_path)
        assert env == named and said == ""


def test_secrets_stay_out_of_reprs():
    settings = load_settings(
        {
            "LABEL_STUDIO_URL": "http://ls:8080",
            "LABEL_STUDIO_API_KEY": "secret-one",
            "BASIC_AUTH_USER": "user",
            "BASIC_AUTH_PASS": "secret-two",
            "LLM_API_KEY": "secret-three",
            "REDIS_URL": "redis://:secret-four@redis:6379/0",
        }
    )
    shown = repr(settings) + str(settings)
    assert "http://ls:8080" in shown
    for secret in ("secret-one", "secret-two", "secret-three", "secret-four"):
        assert secret not in shown
    login = repr(LabelStudioLogin("http://ls", "a@b.c", "secret-five", "secret-six"))
    assert "a@b.c" in login and "secret-five" not in login and "secret-six" not in login
