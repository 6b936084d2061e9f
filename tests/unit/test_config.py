"""Settings: one place converts and checks every value, and says which one is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from clerk.config import ConfigError, Settings, load_settings


def problem(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ)
    return str(caught.value)


@pytest.mark.parametrize(("environ", "message"), [
    ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL='verbose' is not one of DEBUG, INFO, WARNING, ERROR"),
    ({"DATABASE_URL": "notaurl"}, "DATABASE_URL='notaurl' is not a PostgreSQL connection string"),
    ({"LISTEN_DATABASE_URL": "postgresql://clerk:s3cretpw@db/clerk extra"},
     "LISTEN_DATABASE_URL='postgresql://clerk:***@db/clerk extra' is not a PostgreSQL connection"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is not one of text, json"),
    ({"OCR_WORKERS": "abc"}, "OCR_WORKERS='abc' is not a valid int"),
    ({"OCR_WORKERS": "-3"}, "OCR_WORKERS='-3' must be >= 0"),
    ({"CLERK_FETCH_WORKERS": "-1"}, "CLERK_FETCH_WORKERS='-1' must be >= 0"),
    ({"OCR_DPI": "-5"}, "OCR_DPI='-5' must be > 0"),
    ({"OCR_DPI": "0"}, "OCR_DPI='0' must be > 0"),
    ({"POLL_INTERVAL": "0"}, "POLL_INTERVAL='0' must be > 0"),
    ({"SHUTDOWN_GRACE": "nan"}, "SHUTDOWN_GRACE='nan' is not a valid number"),
    ({"SHUTDOWN_GRACE": "inf"}, "SHUTDOWN_GRACE='inf' is not a valid number"),
    ({"SHUTDOWN_GRACE": "-1"}, "SHUTDOWN_GRACE='-1' must be >= 0"),
    ({"METRICS_PORT": "99999"}, "METRICS_PORT='99999' must be between 0 and 65535"),
    ({"METRICS_PORT": "-1"}, "METRICS_PORT='-1' must be between 0 and 65535"),
    ({"OCR_TIMEOUT": "0"}, "OCR_TIMEOUT='0' must be > 0"),
    ({"HTTP_TIMEOUT": "-2"}, "HTTP_TIMEOUT='-2' must be > 0"),
    ({"LEASE_SECONDS": "0"}, "LEASE_SECONDS='0' must be > 0"),
    ({"MAX_JOBS_PER_WORKER": "0"}, "MAX_JOBS_PER_WORKER='0' must be >= 1"),
    ({"DEFAULT_OCR_BACKEND": "bogus"}, "DEFAULT_OCR_BACKEND='bogus' is not a known OCR backend "
                                       "(pytesseract, tesseract, tesserocr)"),
    ({"DEPLOY_BACKEND": "s3"}, "DEPLOY_BACKEND='s3' is not a known deploy backend (directory)"),
    ({"QUEUE_SCHEMA": "Robert'); DROP"}, "QUEUE_SCHEMA=\"Robert'); DROP\" is not a schema name"),
])
def test_each_bad_value_is_named(environ: dict[str, str], message: str) -> None:
    assert message in problem(environ)


def test_good_values_are_converted_and_normalised() -> None:
    settings = load_settings(None, {
        "LOG_LEVEL": "debug", "LOG_FORMAT": "JSON", "OCR_WORKERS": "0", "METRICS_PORT": "9100",
        "SHUTDOWN_GRACE": "2.5", "STORAGE_DIR": "~/x", "DEFAULT_OCR_BACKEND": "tesseract"})
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert (settings.ocr_workers, settings.metrics_port, settings.shutdown_grace) == (0, 9100, 2.5)
    assert settings.storage_dir == Path("~/x").expanduser()
    assert load_settings(None, {"METRICS_PORT": "0"}).metrics_port == 0  # 0: no endpoint


def test_every_problem_at_once_and_the_rest_kept() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"OCR_WORKERS": "abc", "LOG_LEVEL": "verbose", "OCR_DPI": "300",
                             "DATABASE_URL": "postgresql://x@h/db"})
    error = caught.value
    assert [p.split("=")[0] for p in error.problems] == ["OCR_WORKERS", "LOG_LEVEL"]
    assert error.partial is not None
    assert error.partial.ocr_dpi == 300 and error.partial.database_url == "postgresql://x@h/db"
    assert error.partial.log_level == Settings().log_level  # the bad one at its default


def test_environment_wins_over_the_file_whichever_name_each_uses(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CLERK_DATABASE_URL=postgresql://file/db\nOCR_DPI=240\n"
                        "FETCH_WORKERS=3\n")
    settings = load_settings(env_file, {"DATABASE_URL": "postgresql://env/db",
                                        "CLERK_FETCH_WORKERS": "5"})
    assert settings.database_url == "postgresql://env/db"
    assert settings.fetch_workers == 5
    assert settings.ocr_dpi == 240  # only in the file
    # within one source the CLERK_ name wins
    assert load_settings(None, {"OCR_DPI": "100", "CLERK_OCR_DPI": "120"}).ocr_dpi == 120
    # a reload reads the file over the environment systemd loaded at start
    reloaded = load_settings(env_file, {"DATABASE_URL": "postgresql://env/db"}, file_wins=True)
    assert reloaded.database_url == "postgresql://file/db"


def test_a_bad_value_in_the_file_names_the_file_setting(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OCR_WORKERS=abc\n")
    with pytest.raises(ConfigError, match="OCR_WORKERS='abc' is not a valid int"):
        load_settings(env_file, {})
    assert load_settings(env_file, {"OCR_WORKERS": "2"}).ocr_workers == 2  # env wins


def test_env_file_must_exist_only_when_named(tmp_path: Path) -> None:
    missing = tmp_path / "prod.evn"
    assert load_settings(missing, {}) == load_settings(None, {})  # the implicit default
    with pytest.raises(ConfigError, match=r"env file .*prod\.evn does not exist"):
        load_settings(missing, {}, required=True)
    for required in (False, True):
        with pytest.raises(ConfigError, match="is a directory"):
            load_settings(tmp_path, {}, required=required)
