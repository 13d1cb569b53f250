"""scripts/system-copy.sh: what setup.sh, run as root, installs as the copy of veraPDF every account runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the system copy is made by root only")


def system_copy(cache: Path, system: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "system-copy.sh"), str(cache), str(system)],
                          capture_output=True, text=True, timeout=60)


def make_cache(tmp_path: Path, classpath: str) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    (cache / "verapdf-core.jar").write_bytes(b"PK jar")
    (cache / "digitize-validator.jar").write_bytes(b"PK validator")
    (cache / "verapdf.classpath").write_text(classpath.format(cache=cache))
    return cache


def test_root_copies_its_own_cache(tmp_path):
    cache = make_cache(tmp_path, "{cache}/verapdf-core.jar")
    done = system_copy(cache, tmp_path / "sys")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sys" / "verapdf" / "verapdf-core.jar").read_bytes() == b"PK jar"
    assert (tmp_path / "sys" / "verapdf.classpath").read_text().strip() == str(tmp_path / "sys/verapdf/verapdf-core.jar")


@pytest.mark.parametrize("plant", ["foreign-cache", "listed-system-file", "symlinked-jar", "foreign-jar"])
def test_root_never_installs_what_another_account_could_plant(tmp_path, plant):
    """Review rev17ops M5: run as root with another user's HOME/DIGITIZE_CACHE, setup.sh installed any file
    that cache's classpath listed (/etc/shadow, world-readable) and that user's jar as root's trusted copy."""
    cache = make_cache(tmp_path, "/etc/hostname:{cache}/verapdf-core.jar" if plant == "listed-system-file"
                       else "{cache}/verapdf-core.jar")
    if plant == "foreign-cache":
        for path in (cache, *cache.iterdir()):
            os.chown(path, 65534, 65534)
    elif plant == "symlinked-jar":
        (cache / "verapdf-core.jar").unlink()
        (cache / "verapdf-core.jar").symlink_to("/etc/hostname")
    elif plant == "foreign-jar":
        os.chown(cache / "digitize-validator.jar", 65534, 65534)
    done = system_copy(cache, tmp_path / "sys")
    assert done.returncode != 0 and "refusing" in done.stderr
    assert not (tmp_path / "sys").exists()


def in_setup_shell(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``script`` run after sourcing system-copy.sh, as setup.sh and test.sh do, with ``env`` on top of ours."""
    return subprocess.run(["bash", "-c", f'set -euo pipefail; . "$1"; {script}', "sh",
                           str(ROOT / "scripts" / "system-copy.sh")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})


def nobodys_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "alice"
    folder.mkdir(mode=0o755)
    os.chown(folder, 65534, 65534)
    return folder


def test_a_symlinked_cache_is_used_resolved_never_as_the_link(tmp_path):
    """review2 r2ops N4: a link in another account's folder to root's cache passed trusted_path (which checked
    the target) and setup then used the link, which that account could re-point during the install."""
    os.chmod(tmp_path, 0o755)
    own = tmp_path / "rootcache"
    own.mkdir(mode=0o755)
    link = nobodys_folder(tmp_path) / "link"
    link.symlink_to(own)
    done = in_setup_shell('choose_cache; echo "$CACHE"; echo "$DIGITIZE_CACHE"',
                          {"DIGITIZE_CACHE": str(link), "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(own), str(own)]


def test_a_cache_someone_else_made_after_the_check_is_refused(tmp_path):
    """review2 r2ops N4: a path not made yet under a sticky folder passes; the folder made there must be checked."""
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(sticky, 0o1777)
    cache = sticky / "not-yet" / "digitize"
    cache.mkdir(parents=True)  # as another account would, between the check and mkdir -p
    os.chown(cache.parent, 65534, 65534)
    done = in_setup_shell(f'CACHE={cache}; make_cache', {})
    assert done.returncode != 0 and "refusing the cache" in done.stderr


def test_no_folder_is_made_through_a_link_planted_after_the_check(tmp_path):
    """Twenty-fourth session's open low point: a path not made yet under a sticky folder passes the check; a
    link another account plants there before the folders are made was followed by mkdir -p (and install -d),
    which made root's folders at the link's target. Now each folder is made without following a link."""
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(sticky, 0o1777)
    target = nobodys_folder(tmp_path)
    cache = sticky / "not-yet" / "digitize"
    (sticky / "not-yet").symlink_to(target)  # as another account would, between the check and the mkdir
    os.lchown(sticky / "not-yet", 65534, 65534)
    done = in_setup_shell(f'CACHE={cache}; make_cache', {})
    assert done.returncode != 0 and "refusing the cache" in done.stderr
    assert not (target / "digitize").exists()
    done = in_setup_shell(f'if make_dirs -m 0755 {sticky}/not-yet/tesseract; then echo made; else echo "refused $?"; fi', {})
    assert done.stdout.strip() == "refused 1" and not (target / "tesseract").exists()


def test_no_folder_is_made_in_another_accounts_folder_it_could_swap_for_a_link(tmp_path):
    """Second reader: a folder on the way that another account owns passed as a directory, and that account
    could swap it for a link between the check and the next mkdir (a mkdir shim does it here, as a racing
    account would). As root, a folder is made only where root alone can change the folders above."""
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(sticky, 0o1777)
    theirs = sticky / "x"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    target = nobodys_folder(tmp_path)
    shim = (f'mkdir() {{ if [ ! -L {theirs} ]; then mv {theirs} {theirs}.old && ln -s {target} {theirs}; fi; '
            f'command mkdir "$@"; }}; ')
    done = in_setup_shell(shim + f'CACHE={theirs}/digitize; make_cache', {})
    assert done.returncode != 0 and "refusing the cache" in done.stderr
    assert not (target / "digitize").exists()
    assert in_setup_shell(f'make_dirs $\'{tmp_path}/new\nline\' || echo refused', {}).stdout.strip() == "refused"
    assert not (tmp_path / "new").exists()


def test_make_dirs_makes_every_missing_folder_with_its_mode(tmp_path):
    done = in_setup_shell(f'umask 077; make_dirs -m 0755 {tmp_path}/a/b/c {tmp_path}/d; make_dirs {tmp_path}/e/f', {})
    assert done.returncode == 0, done.stderr
    assert [oct((tmp_path / p).stat().st_mode & 0o777) for p in ("a", "a/b", "a/b/c", "d")] == ["0o755"] * 4
    assert oct((tmp_path / "e/f").stat().st_mode & 0o777) == "0o700"  # no mode: the umask's
    (tmp_path / "file").write_text("x")
    assert in_setup_shell(f'make_dirs {tmp_path}/file/x || echo refused', {}).stdout.strip() == "refused"


def test_root_drops_the_invoking_accounts_build_settings(tmp_path):
    """review2 r2ops N5: sudo -E kept GOMODCACHE/GOFLAGS/MAVEN_OPTS/PIP_*: a planted module cache made setup
    copy and run another account's `go` as root. GOPROXY, the machine's proxy choice, stays."""
    planted = {"GOMODCACHE": "/x", "GOFLAGS": "-toolexec=/x", "MAVEN_OPTS": "-Dmaven.repo.local=/x",
               "PIP_INDEX_URL": "http://x/", "GONOSUMDB": "*", "PYTHONPATH": "/x", "XDG_CACHE_HOME": "/x",
               # review3 r3ops R1: mvn runs $JAVA_HOME/bin/java, apt runs APT_CONFIG's Pre-Invoke, and pip trusts
               # these CA bundles while https_proxy is kept; names no deny-list had
               "JAVA_HOME": "/x", "APT_CONFIG": "/x", "REQUESTS_CA_BUNDLE": "/x", "CURL_CA_BUNDLE": "/x",
               "SSL_CERT_FILE": "/x", "NODE_OPTIONS": "--require=/x", "SOME_TOOL_HOME": "/x"}
    home = nobodys_folder(tmp_path)
    for env in ({"HOME": str(home)}, {"HOME": os.path.expanduser("~root"), "SUDO_UID": "1000"}):
        done = in_setup_shell("root_environment; env", {**planted, **env, "GOPROXY": "off",
                                                        "https_proxy": "http://proxy:3128", "LANG": "C.UTF-8",
                                                        "PATH": f"{home}:{os.environ['PATH']}"})
        assert done.returncode == 0, done.stderr
        names = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        assert not set(planted) & set(names), env
        assert names["GOPROXY"] == "off" and str(home) not in names["PATH"].split(":")
        assert names["https_proxy"] == "http://proxy:3128" and names["LANG"] == "C.UTF-8"
        assert names["HOME"] == os.path.expanduser("~root")


def test_root_names_what_it_leaves_out(tmp_path):
    """review3 r3ops R6: PATH folders and the invoking account's variables were dropped silently (a toolcache
    python3, a proxied pip then failed later with no hint). Names only, never values."""
    home = nobodys_folder(tmp_path)
    done = in_setup_shell("root_environment", {"HOME": str(home), "PIP_CERT": "/secret-value",
                                               "PATH": f"{home}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(str(home) in line and "PATH" in line for line in lines), lines
    assert any("PIP_CERT" in line for line in lines) and "/secret-value" not in done.stderr


def test_root_keeps_its_own_build_settings(tmp_path):
    done = in_setup_shell("root_environment; env", {"HOME": os.path.expanduser("~root"), "PIP_FIND_LINKS": "/w"})
    assert done.returncode == 0 and "PIP_FIND_LINKS=/w" in done.stdout.splitlines()


def test_the_tests_run_the_minio_that_setup_builds(tmp_path):
    """review2 r2ops N6: with another account's HOME, setup.sh built MinIO in root's cache while test.sh pointed
    the tests at that account's (CI: every MinIO test failed; or root ran that account's minio)."""
    home = nobodys_folder(tmp_path)
    (home / ".cache" / "digitize" / "bin").mkdir(parents=True)
    env = {"HOME": str(home), "DIGITIZE_CACHE": "", "DIGITIZE_MINIO_BIN": ""}
    setup = in_setup_shell('root_environment; choose_cache; echo "$CACHE"', env)
    tests = in_setup_shell('test_environment; echo "$DIGITIZE_MINIO_BIN"', env)
    assert setup.returncode == 0 and tests.returncode == 0, setup.stderr + tests.stderr
    root_cache = os.path.realpath(os.path.expanduser("~root/.cache/digitize"))
    assert setup.stdout.strip() == root_cache and tests.stdout.strip() == f"{root_cache}/bin/minio"
    assert "test_environment" in (ROOT / "scripts" / "test.sh").read_text()  # and test.sh runs it


def test_the_tesseract_build_is_never_installed_where_another_account_can_write(tmp_path):
    """scripts/build-tesseract.sh's library runs in every account's page workers: a folder someone else can
    change is refused before anything is fetched or built."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "build-tesseract.sh"), str(shared / "tesseract")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "refusing" in done.stderr
    assert not (shared / "tesseract").exists()


def test_the_tesseract_build_is_never_installed_through_a_link(tmp_path):
    """Review (this change) M1: the shell's trusted_path checks the resolved path only; a link as written,
    in a folder another account owns, could be re-pointed while root builds (at /usr/lib, say)."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "build-tesseract.sh"), str(tmp_path / "link" / "tesseract")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "reached through a link" in done.stderr
    assert not (real / "tesseract").exists()


def test_an_empty_path_is_never_trusted(tmp_path):
    """Second review of this change, L4: `trusted_path ""` circled for ever on "." (realpath "" is "")."""
    done = in_setup_shell('trusted_path "" && echo trusted || echo refused', {})
    assert done.returncode == 0 and done.stdout.strip() == "refused"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "build-tesseract.sh"), ""], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "usage" in done.stderr


V3 = "avx avx2 bmi1 bmi2 f16c fma abm movbe xsave cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3"
V4 = V3 + " avx512f avx512bw avx512cd avx512dq avx512vl"


def x86_level(cpuinfo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "build-tesseract.sh"), "--x86-level", str(cpuinfo)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("flags, level", [(f"fpu sse2 {V4} avx512_vnni", "x86-64-v4"), (f"fpu {V3} avx512f", "x86-64-v3"),
                                          ("fpu sse2 avx avx2 fma", ""), ("", "")])
def test_the_tesseract_build_targets_the_highest_level_the_processor_has_all_of(tmp_path, flags, level):
    """build-tesseract.sh compiles for that x86-64 level and stamps its flags (tesslib loads the build only
    where they all are): AVX-512 without all five of v4's parts is v3, AVX2 without BMI or MOVBE no level."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\n" if flags else "processor\t: 0\n")
    done = x86_level(cpuinfo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:1] == ([level] if level else [])
    if level:
        assert set(done.stdout.split()[1:]) == set((V4 if level.endswith("v4") else V3).split())


def test_a_machine_with_many_processors_still_gets_its_level(tmp_path):
    """/proc/cpuinfo of a 96-CPU server is ~200 KB: ``sed | head -1`` under pipefail got sed a SIGPIPE
    there, and the whole build (so the faster Tesseract) was lost."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(f"processor\t: {n}\nflags\t\t: fpu sse2 {V4} {'x' * 1500}\n\n" for n in range(96)))
    done = x86_level(cpuinfo)
    assert done.returncode == 0 and done.stdout.startswith("x86-64-v4 "), done.stderr
