from __future__ import annotations

from datetime import date

import pytest

from spark_jobs.errors import HeaderMismatchError
from spark_jobs.landing import find_source_file, header_positions, inspect_file
from spark_jobs.sources import SOURCES


def test_files_are_found_case_insensitively(settings, tmp_path):
    folder = tmp_path / "landing" / "2024-01-15" / "source_erp"
    folder.mkdir(parents=True)
    (folder / "cust_az12.CSV").write_text("CID,BDATE,GEN\n")
    found = find_source_file(settings, SOURCES["erp_cust_az12"], date(2024, 1, 15))
    assert found == str(folder / "cust_az12.CSV")
    assert find_source_file(settings, SOURCES["erp_loc_a101"], date(2024, 1, 15)) is None


def test_two_files_differing_only_in_case_are_ambiguous(settings, tmp_path):
    folder = tmp_path / "landing" / "2024-01-15" / "source_erp"
    folder.mkdir(parents=True)
    (folder / "LOC_A101.csv").write_text("CID,CNTRY\n")
    (folder / "loc_a101.csv").write_text("CID,CNTRY\n")
    with pytest.raises(FileExistsError, match=r"several files match LOC_A101\.csv"):
        find_source_file(settings, SOURCES["erp_loc_a101"], date(2024, 1, 15))


def test_inspect_reads_header_without_bom_and_checks_utf8(tmp_path):
    good = tmp_path / "good.csv"
    good.write_bytes(b'\xef\xbb\xbf"CID", CNTRY\r\nAW-1,DE\r\n')
    info = inspect_file(str(good))
    assert info.header == ("CID", "CNTRY") and info.valid_utf8
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"CID,CNTRY\r\n" + b"AW-1,DE\r\n" * 200_000 + b"AW-2,M\xfcnchen\r\n")
    assert inspect_file(str(bad)).valid_utf8 is False
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert inspect_file(str(empty)).header is None


def test_header_mismatch_message_names_file_and_columns(tmp_path):
    path = tmp_path / "LOC_A101.csv"
    path.write_text("CID,CID,REGION\n")
    with pytest.raises(HeaderMismatchError) as excinfo:
        header_positions(SOURCES["erp_loc_a101"], inspect_file(str(path)))
    message = str(excinfo.value)
    assert str(path) in message
    assert "missing columns ['cntry']" in message
    assert "unexpected columns ['region']" in message
    assert "duplicated columns ['cid']" in message
