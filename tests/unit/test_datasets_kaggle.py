"""Kaggle downloads (credentials, idempotence, errors, no key leaks) and Fashion Product Images."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from visualsim.datasets import (
    FashionProductImages,
    KaggleCredentialsWarning,
    KaggleDataset,
    MissingImagesWarning,
    download_kaggle_dataset,
    find_kaggle_credentials,
)
from visualsim.datasets.fashion_products import SLUGS, find_styles_csv
from visualsim.datasets.kaggle import MARKER_NAME, is_downloaded
from visualsim.errors import DatasetError

KEY = "k3y-5ecret-0123456789abcdef"
SMALL = SLUGS["small"]

HEADER = (
    "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
    "productDisplayName"
)
STYLES_ROWS = [
    "15970,Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011,Casual,Turtle Check Men Navy Blue Shirt",
    "39386,Men,Apparel,Bottomwear,Jeans,Blue,Summer,2012.0,Casual,Peter England Men Party Jeans",
    # the real file's 11-field rows: an unquoted comma inside the name
    "11293,Women,Apparel,Topwear,Tops,Pink,Summer,2011,Casual,Lee Cooper Women, Pink Top",
    "59263,Women,Accessories,Watches,Watches,Silver,Winter,,Casual,Titan Women Silver Watch",
    "39425,Women,Apparel,Topwear,Tshirts,White,Summer,2012,,Puma Women White T-shirt",
    "53759,Men,Apparel,Topwear,Tshirts,Grey,Summer,2012,Casual,Puma Men Grey T-shirt",
]
MISSING_IMAGE_ID = 39425


def make_fashion_layout(root: Path, *, nest: str = "fashion-dataset/fashion-dataset",
                        full: bool = False) -> Path:  # fmt: skip
    """Write the Kaggle archive's layout: styles.csv + images/{id}.jpg (tiny JPEGs)."""
    base = root / nest if nest else root
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "styles.csv").write_text(HEADER + "\n" + "\n".join(STYLES_ROWS) + "\n")
    for row in STYLES_ROWS:
        style_id = int(row.split(",", 1)[0])
        if style_id != MISSING_IMAGE_ID:
            Image.new("RGB", (6, 8), (style_id % 256, 80, 120)).save(
                base / "images" / f"{style_id}.jpg"
            )
    if full:
        (base / "images.csv").write_text(
            "filename,link\n15970.jpg,http://example.com/15970.jpg\n39386.jpg,undefined\n"
        )
        (base / "styles").mkdir()
        (base / "styles" / "15970.json").write_text(
            json.dumps(
                {
                    "meta": {"code": 200},
                    "data": {
                        "id": 15970,
                        "price": 1299,
                        "brandName": "Turtle",
                        "gender": "Male",  # must not override styles.csv
                        "styleImages": {"default": {}},
                    },
                }
            )
        )
    return base


# --- credentials ---------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home directory and no Kaggle settings in the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for name in ("KAGGLE_CONFIG_DIR", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return home


def write_kaggle_json(directory: Path, mode: int = 0o600) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "kaggle.json"
    path.write_text(json.dumps({"username": "alice", "key": KEY}))
    path.chmod(mode)
    return path


@pytest.fixture
def credentials(home: Path) -> Path:
    return write_kaggle_json(home / ".kaggle")


class FakeKaggleApi:
    """Records calls; 'downloads' by writing the Fashion Product Images layout."""

    def __init__(
        self,
        fail: BaseException | None = None,
        fail_on_auth: BaseException | None = None,
        write: Callable[[Path], Any] = make_fashion_layout,
    ) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail
        self.fail_on_auth = fail_on_auth
        self.write = write

    def authenticate(self) -> None:
        self.calls.append(("authenticate",))
        if self.fail_on_auth is not None:
            raise self.fail_on_auth

    def dataset_download_files(  # network-free: a stand-in that records the call
        self, dataset: str, path: str | None = None, **kwargs: Any
    ) -> None:
        self.calls.append(("download", dataset, path, kwargs))
        print(f"Dataset URL: https://www.kaggle.com/datasets/{dataset} key={KEY}")
        assert path is not None
        self.write(Path(path))
        if self.fail is not None:
            raise self.fail

    @property
    def downloads(self) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == "download"]


def test_credentials_from_kaggle_json(credentials: Path) -> None:
    found = find_kaggle_credentials()
    assert found.source == "kaggle.json" and found.path == credentials
    assert found.username == "alice"
    assert KEY not in repr(found) and KEY not in found.describe()


def test_credentials_from_config_dir(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_kaggle_json(home / "elsewhere")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / "elsewhere"))
    assert find_kaggle_credentials().path == path


def test_credentials_from_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    found = find_kaggle_credentials()
    assert (found.source, found.username) == ("environment", "bob")


def test_no_credentials_explains_setup(home: Path) -> None:
    with pytest.raises(DatasetError) as info:
        find_kaggle_credentials()
    message = str(info.value)
    assert "kaggle.json" in message and "chmod 600" in message and "KAGGLE_KEY" in message


def test_malformed_kaggle_json_names_file_not_contents(home: Path) -> None:
    path = home / ".kaggle" / "kaggle.json"
    path.parent.mkdir()
    path.write_text('{"username": "alice", "key": "' + KEY)  # truncated JSON
    path.chmod(0o600)
    with pytest.raises(DatasetError) as info:
        find_kaggle_credentials()
    assert str(path) in str(info.value)
    assert KEY not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_readable_kaggle_json_warns_with_chmod(home: Path, mode: int) -> None:
    path = write_kaggle_json(home / ".kaggle", mode)
    with pytest.warns(KaggleCredentialsWarning, match=f"chmod 600 {path}"):
        find_kaggle_credentials()


def test_private_kaggle_json_does_not_warn(credentials: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        find_kaggle_credentials()


# --- download ------------------------------------------------------------------------------


def test_download_calls_client_once_with_slug_and_path(credentials: Path, tmp_path: Path) -> None:
    api = FakeKaggleApi()
    root = download_kaggle_dataset(SMALL, tmp_path / "data", api=api)
    assert api.calls[0] == ("authenticate",)
    assert len(api.downloads) == 1
    _, slug, path, kwargs = api.downloads[0]
    assert slug == SMALL and Path(path) == (tmp_path / "data").resolve()
    assert kwargs["unzip"] is True and kwargs["force"] is False
    assert (root / MARKER_NAME).is_file() and is_downloaded(SMALL, root)


def test_download_is_skipped_when_complete(credentials: Path, tmp_path: Path) -> None:
    api = FakeKaggleApi()
    download_kaggle_dataset(SMALL, tmp_path / "data", api=api)
    download_kaggle_dataset(SMALL, tmp_path / "data", api=api)
    assert len(api.downloads) == 1


def test_complete_download_needs_no_credentials(credentials: Path, tmp_path: Path) -> None:
    download_kaggle_dataset(SMALL, tmp_path / "data", api=FakeKaggleApi())
    credentials.unlink()
    api = FakeKaggleApi()
    download_kaggle_dataset(SMALL, tmp_path / "data", api=api)
    assert api.calls == []


def test_force_downloads_again(credentials: Path, tmp_path: Path) -> None:
    api = FakeKaggleApi()
    download_kaggle_dataset(SMALL, tmp_path / "data", api=api)
    download_kaggle_dataset(SMALL, tmp_path / "data", api=api, force=True)
    assert len(api.downloads) == 2 and api.downloads[1][3]["force"] is True


def test_interrupted_download_is_redone(credentials: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        broken = FakeKaggleApi(fail=ConnectionResetError("connection reset by peer"))
        download_kaggle_dataset(SMALL, tmp_path / "data", api=broken)
    assert not (tmp_path / "data" / MARKER_NAME).exists()
    api = FakeKaggleApi()
    download_kaggle_dataset(SMALL, tmp_path / "data", api=api)
    assert len(api.downloads) == 1


def test_marker_of_another_slug_does_not_count(credentials: Path, tmp_path: Path) -> None:
    download_kaggle_dataset("someone/other", tmp_path / "data", api=FakeKaggleApi())
    api = FakeKaggleApi()
    download_kaggle_dataset(SMALL, tmp_path / "data", api=api)
    assert len(api.downloads) == 1


def test_download_without_credentials_never_calls_client(home: Path, tmp_path: Path) -> None:
    api = FakeKaggleApi()
    with pytest.raises(DatasetError, match="no Kaggle credentials"):
        download_kaggle_dataset(SMALL, tmp_path / "data", api=api)
    assert api.calls == []


def test_invalid_slug_is_refused(credentials: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="owner/dataset-name"):
        download_kaggle_dataset("not a slug", tmp_path, api=FakeKaggleApi())


def test_network_down_explains_manual_download(credentials: Path, tmp_path: Path) -> None:
    api = FakeKaggleApi(fail=ConnectionError("Max retries exceeded with url: /api/v1/datasets"))
    with pytest.raises(DatasetError) as info:
        download_kaggle_dataset(SMALL, tmp_path / "data", api=api)
    message = str(info.value)
    assert "unreachable" in message
    assert f"https://www.kaggle.com/datasets/{SMALL}" in message and MARKER_NAME in message


class HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"{status} Client Error")
        self.response = type("Response", (), {"status_code": status})()


@pytest.mark.parametrize(
    ("status", "expected"), [(401, "did not accept"), (403, "accept the"), (404, "no dataset")]
)
def test_http_errors_are_explained(
    credentials: Path, tmp_path: Path, status: int, expected: str
) -> None:
    with pytest.raises(DatasetError, match=expected):
        download_kaggle_dataset(SMALL, tmp_path / "d", api=FakeKaggleApi(fail=HTTPError(status)))


def test_client_exit_on_bad_credentials_becomes_dataset_error(
    credentials: Path, tmp_path: Path
) -> None:
    api = FakeKaggleApi(fail_on_auth=SystemExit(1))
    with pytest.raises(DatasetError, match="did not accept the credentials"):
        download_kaggle_dataset(SMALL, tmp_path / "d", api=api)


def test_corrupt_archive_suggests_force(credentials: Path, tmp_path: Path) -> None:
    import zipfile

    api = FakeKaggleApi(fail=zipfile.BadZipFile("File is not a zip file"))
    with pytest.raises(DatasetError, match="force=True"):
        download_kaggle_dataset(SMALL, tmp_path / "d", api=api)


def _exception_texts(exc: BaseException | None) -> Iterator[str]:
    while exc is not None:
        yield f"{exc!r} {exc} {exc.args!r}"
        exc = exc.__cause__ or exc.__context__


@pytest.mark.parametrize("insecure", [False, True])
def test_key_appears_nowhere(
    home: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    insecure: bool,
) -> None:
    write_kaggle_json(home / ".kaggle", 0o644 if insecure else 0o600)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        download_kaggle_dataset(SMALL, tmp_path / "ok", api=FakeKaggleApi())
        for fail in (
            ConnectionError(f"proxy refused https://alice:{KEY}@www.kaggle.com"),
            HTTPError(401),
            RuntimeError(f"unexpected token {KEY}"),
        ):
            with pytest.raises(DatasetError) as info:
                download_kaggle_dataset(SMALL, tmp_path / "bad", api=FakeKaggleApi(fail=fail))
            texts.extend(_exception_texts(info.value))
    texts += [str(w.message) for w in caught]
    texts += [r.getMessage() for r in caplog.records]
    out = capsys.readouterr()
    texts += [out.out, out.err]
    for path in tmp_path.rglob("*"):
        if path.is_file() and home not in path.parents:
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    assert caught if insecure else True
    assert texts and not [t for t in texts if KEY in t]


def test_client_output_goes_to_log_redacted(
    credentials: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO, logger="visualsim.datasets.kaggle")
    download_kaggle_dataset(SMALL, tmp_path / "d", api=FakeKaggleApi())
    assert capsys.readouterr().out == ""
    assert any("Dataset URL" in r.getMessage() and "***" in r.getMessage() for r in caplog.records)


def test_kaggle_dataset_downloads_then_reads_images(credentials: Path, tmp_path: Path) -> None:
    api = FakeKaggleApi()
    ds = KaggleDataset(SMALL, tmp_path / "data", api=api)
    assert len(api.downloads) == 1
    assert len(ds) == len(STYLES_ROWS) - 1
    assert all(str(i).startswith("fashion-dataset/") for i in ds.ids())
    again = KaggleDataset(SMALL, tmp_path / "data", api=api)
    assert len(api.downloads) == 1 and len(again) == len(ds)
    assert SMALL in repr(ds)


# --- Fashion Product Images ----------------------------------------------------------------


@pytest.fixture
def fashion_root(tmp_path: Path) -> Path:
    make_fashion_layout(tmp_path / "fpi")
    return tmp_path / "fpi"


def load(root: Path, **kwargs: Any) -> FashionProductImages:
    with pytest.warns(MissingImagesWarning, match=str(MISSING_IMAGE_ID)):
        return FashionProductImages(root, **kwargs)


def test_fpi_finds_nested_styles_csv(fashion_root: Path) -> None:
    ds = load(fashion_root)
    assert ds.styles_path == fashion_root / "fashion-dataset" / "fashion-dataset" / "styles.csv"


@pytest.mark.parametrize("nest", ["", "myntradataset", "fashion-dataset"])
def test_fpi_layouts(tmp_path: Path, nest: str) -> None:
    make_fashion_layout(tmp_path, nest=nest)
    assert len(load(tmp_path)) == len(STYLES_ROWS) - 1


def test_fpi_reads_every_row_and_reports_missing_image(fashion_root: Path) -> None:
    ds = load(fashion_root)
    assert ds.missing == [MISSING_IMAGE_ID]
    assert sorted(ds.ids()) == sorted(
        int(r.split(",", 1)[0]) for r in STYLES_ROWS if not r.startswith(str(MISSING_IMAGE_ID))
    )


def test_fpi_keeps_row_with_comma_in_name(fashion_root: Path) -> None:
    ds = load(fashion_root)
    meta = {i.id: i.metadata for i in ds}
    assert meta[11293]["productDisplayName"] == "Lee Cooper Women, Pink Top"
    assert meta[11293]["usage"] == "Casual"
    assert [(i.line, i.id) for i in ds.issues] == [(4, "11293")]
    assert "11 fields" in ds.issues[0].problem


def test_fpi_years_float_and_empty(fashion_root: Path) -> None:
    meta = {i.id: i.metadata for i in load(fashion_root)}
    assert meta[15970]["year"] == 2011
    assert meta[39386]["year"] == 2012 and type(meta[39386]["year"]) is int
    assert meta[59263]["year"] is None


def test_fpi_metadata_columns_and_images(fashion_root: Path) -> None:
    item = load(fashion_root)[0]
    assert item.id == 15970
    assert item.metadata == {
        "gender": "Men",
        "masterCategory": "Apparel",
        "subCategory": "Topwear",
        "articleType": "Shirts",
        "baseColour": "Navy Blue",
        "season": "Fall",
        "year": 2011,
        "usage": "Casual",
        "productDisplayName": "Turtle Check Men Navy Blue Shirt",
    }
    assert Path(item.image).name == "15970.jpg" and Path(item.image).is_file()


def test_fpi_to_frame(fashion_root: Path) -> None:
    frame = load(fashion_root).to_frame()
    assert frame.columns[0] == "id" and "gender" in frame.columns
    assert (frame["gender"] == "Women").sum() == 2


def test_fpi_full_variant_extras(tmp_path: Path) -> None:
    make_fashion_layout(tmp_path, nest="fashion-dataset", full=True)
    ds = load(tmp_path, variant="full", details=["price", "brandName", "gender"])
    meta = {i.id: i.metadata for i in ds}
    assert meta[15970]["link"] == "http://example.com/15970.jpg"
    assert meta[39386]["link"] is None
    assert meta[15970]["price"] == 1299 and meta[15970]["brandName"] == "Turtle"
    assert meta[15970]["gender"] == "Men"
    assert "price" not in load(tmp_path, variant="full")[0].metadata
    assert ds.style_details(15970)["styleImages"] == {"default": {}}
    assert ds.style_details(39386) == {}


def test_fpi_all_scalar_details(tmp_path: Path) -> None:
    make_fashion_layout(tmp_path, nest="", full=True)
    meta = load(tmp_path, details=True)[0].metadata
    assert meta["price"] == 1299 and "styleImages" not in meta


def test_fpi_without_data_explains_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="download=True"):
        FashionProductImages(tmp_path)


def test_fpi_bad_header_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "styles.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="header"):
        FashionProductImages(tmp_path)


def test_fpi_download_uses_variant_slug_once(credentials: Path, tmp_path: Path) -> None:
    api = FakeKaggleApi()
    load(tmp_path / "d", variant="full", download=True, api=api)
    load(tmp_path / "d", variant="full", download=True, api=api)
    assert [c[1] for c in api.downloads] == [SLUGS["full"]]


def test_fpi_hand_downloaded_data_is_not_downloaded_again(fashion_root: Path, home: Path) -> None:
    api = FakeKaggleApi()
    load(fashion_root, download=True, api=api)
    assert api.calls == []


def test_find_styles_prefers_copy_with_images(tmp_path: Path) -> None:
    (tmp_path / "styles.csv").write_text(HEADER + "\n")
    make_fashion_layout(tmp_path, nest="myntradataset")
    assert find_styles_csv(tmp_path) == tmp_path / "myntradataset" / "styles.csv"


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.text(
        alphabet=st.characters(blacklist_characters='\r\n"', blacklist_categories=("Cs", "Cc")),
        min_size=1,
        max_size=40,
    ).filter(lambda s: s.strip() == s and s.strip())
)
def test_fpi_any_unquoted_name_round_trips(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    root = tmp_path_factory.mktemp("fpi")
    (root / "images").mkdir()
    Image.new("RGB", (4, 4)).save(root / "images" / "1.jpg")
    line = f"1,Men,Apparel,Topwear,Shirts,Blue,Fall,2011,Casual,{name}"
    (root / "styles.csv").write_text(f"{HEADER}\n{line}\n", encoding="utf-8")
    ds = FashionProductImages(root)
    assert ds[0].metadata["productDisplayName"] == name
    assert len(ds.issues) == (1 if "," in name else 0)
