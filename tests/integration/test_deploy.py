"""The directory deployer copies a database into DEPLOY_DIR atomically."""

from pathlib import Path

import pytest

from clerk.config import Settings
from clerk.deploy import DeployError, deploy, get_deployer
from clerk.sites import InvalidSubdomain


def test_directory_deploy(tmp_path: Path) -> None:
    settings = Settings(deploy_dir=tmp_path / "deploy")
    database = tmp_path / "meetings.db"
    database.write_bytes(b"SQLite format 3\x00" + b"1" * 100)
    target = deploy("alameda.ca", database, settings)
    assert target == str(tmp_path / "deploy" / "alameda.ca.db")
    assert Path(target).read_bytes() == database.read_bytes()
    database.write_bytes(b"SQLite format 3\x00" + b"2" * 100)
    get_deployer("directory").deploy("alameda.ca", database, settings)
    assert Path(target).read_bytes().endswith(b"2")
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == ["alameda.ca.db"]
    assert Path(target).stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("site", ["../evil", "UPPER", "a/b", ".hidden", ""])
def test_site_names_are_validated(tmp_path: Path, site: str) -> None:
    database = tmp_path / "meetings.db"
    database.write_bytes(b"x")
    with pytest.raises(InvalidSubdomain):
        deploy(site, database, Settings(deploy_dir=tmp_path / "deploy"))
    assert not (tmp_path / "deploy").exists() or list((tmp_path / "deploy").iterdir()) == []


def test_missing_database_and_unknown_backend(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="no database"):
        deploy("town", tmp_path / "nope.db", Settings(deploy_dir=tmp_path))
    with pytest.raises(DeployError, match="unknown deploy backend 's3'"):
        get_deployer("s3")
