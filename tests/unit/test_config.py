"""Unit tests for backend.config: settings from an environment mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import ConfigError, Settings, load_settings


def test_defaults():
    settings = load_settings({})
    assert isinstance(settings, Settings)
    assert settings.port == 9090
    assert settings.workers == 2
    assert settings.threads == 8
    assert settings.log_level == "INFO"
    assert settings.model_dir == Path("./model_data").resolve()
    assert settings.label_studio_url is None
    assert settings.label_studio_api_key is None
    assert settings.basic_auth_user is None
    assert settings.basic_auth_pass is None
    assert settings.basic_auth is None
    assert settings.llm_base_url is None
    assert settings.llm_api_key == "not-needed"
    assert settings.llm_model == "smollm2-135m-instruct"
    assert settings.llm_concurrency == 4  # the embedded LLM's slots; 8 with LLM_BASE_URL
    assert load_settings({"LLM_BASE_URL": "http://llm:8000/v1"}).llm_concurrency == 8
    assert settings.llm_timeout == 30.0
    assert settings.llm_max_retries == 2
    assert settings.llm_max_chars == 4000
    assert settings.predict_deadline == 80.0
    assert settings.base_model == "distilbert-base-uncased"
    assert settings.train_epochs == 4
    assert settings.train_learning_rate == 5e-5
    assert settings.train_batch_size == 16
    assert settings.train_max_length == 256
    assert settings.train_min_per_label == 3
    assert settings.train_after_annotations == 20
    assert settings.train_debounce == 3.0
    assert settings.train_seed == 42
    assert settings.holdout_percent == 20


def test_values_are_read_and_normalised(tmp_path):
    settings = load_settings(
        {
            "MODEL_DIR": str(tmp_path),
            "PORT": " 8080 ",
            "WORKERS": "4",
            "LOG_LEVEL": "debug",
            "LLM_BASE_URL": "http://localhost:8000/v1/",
            "LABEL_STUDIO_URL": "https://ls.example.org",
            "LLM_TIMEOUT": "2.5",
            "TRAIN_LEARNING_RATE": "1e-4",
            "HOLDOUT_PERCENT": "90",
            "LLM_MODEL": "",  # empty means unset: the default applies
        }
    )
    assert settings.model_dir == tmp_path.resolve()
    assert settings.port == 8080
    assert settings.workers == 4
    assert settings.log_level == "DEBUG"
    assert settings.llm_base_url == "http://localhost:8000/v1"
    assert settings.label_studio_url == "https://ls.example.org"
    assert settings.llm_timeout == 2.5
    assert settings.train_learning_rate == 1e-4
    assert settings.holdout_percent == 90
    assert settings.llm_model == "smollm2-135m-instruct"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"PORT": "0"}, "PORT"),
        ({"WORKERS": "0"}, "WORKERS"),
        ({"THREADS": "-1"}, "THREADS"),
        ({"LLM_BASE_URL": "not-a-url"}, "LLM_BASE_URL"),
        ({"LLM_BASE_URL": "ftp://host/v1"}, "LLM_BASE_URL"),
        ({"LABEL_STUDIO_URL": "localhost:8080"}, "LABEL_STUDIO_URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"BASIC_AUTH_USER": "alice"}, "BASIC_AUTH_PASS"),
        ({"BASIC_AUTH_PASS": "secret"}, "BASIC_AUTH_USER"),
        ({"HOLDOUT_PERCENT": "95"}, "HOLDOUT_PERCENT"),
        ({"HOLDOUT_PERCENT": "-1"}, "HOLDOUT_PERCENT"),
        ({"TRAIN_LEARNING_RATE": "x"}, "TRAIN_LEARNING_RATE"),
        ({"TRAIN_LEARNING_RATE": "0"}, "TRAIN_LEARNING_RATE"),
        ({"LLM_TIMEOUT": "0"}, "LLM_TIMEOUT"),
        ({"LLM_MAX_CHARS": "99"}, "LLM_MAX_CHARS"),
        ({"TRAIN_EPOCHS": "1.5"}, "TRAIN_EPOCHS"),
    ],
)
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert name in str(info.value)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        load_settings({"PORT": "abc"})


def test_bad_value_message_quotes_the_value():
    with pytest.raises(ConfigError, match="'abc'"):
        load_settings({"PORT": "abc"})


def test_basic_auth_property():
    settings = load_settings({"BASIC_AUTH_USER": "alice", "BASIC_AUTH_PASS": "s3cret"})
    assert settings.basic_auth == ("alice", "s3cret")
    blank = load_settings({"BASIC_AUTH_USER": "  ", "BASIC_AUTH_PASS": ""})
    assert blank.basic_auth is None


def test_public_masks_secrets():
    settings = load_settings(
        {
            "LABEL_STUDIO_API_KEY": "ls-token-123",
            "BASIC_AUTH_USER": "alice",
            "BASIC_AUTH_PASS": "s3cret",
            "LLM_API_KEY": "sk-abc",
            "PORT": "9191",
        }
    )
    public = settings.public()
    for key in ("label_studio_api_key", "basic_auth_pass", "llm_api_key"):
        assert public[key] == "***"
    rendered = repr(public)
    for secret in ("ls-token-123", "s3cret", "sk-abc"):
        assert secret not in rendered
    assert public["basic_auth_user"] == "alice"
    assert public["port"] == "9191"
    assert all(isinstance(value, str) for value in public.values())


def test_public_shows_unset_secrets_as_none():
    public = load_settings({}).public()
    assert public["basic_auth_pass"] == "None"
    assert public["llm_api_key"] == "***"  # the default "not-needed" is still masked
