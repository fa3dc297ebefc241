"""`dotocr ocr`, run for real: a child process with the tiny checkpoint on the CPU, real files on disk,
real stdin and a real pseudo-terminal for the progress bar. The tiny model's weights are random, so
its text is noise; the tests check what the command promises around it (the JSON contract, files,
names, exit codes, messages), and compare formats against each other where the text matters."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from dotocr.cli.arguments import build_parser, parse_bbox
from dotocr.cli.engine_choice import same_model
from dotocr.cli.inputs import InputImage, expand_inputs
from dotocr.cli.outputs import FolderWriter, StdoutWriter, shown_name
from dotocr.cli.server_probe import parse_health, probe_server
from tests.cli_helpers import (
    REPO,
    TINY,
    TINY_FLAGS,
    free_port,
    in_process_cli,
    run_dotocr,
    text_image,
    warm_server,
    write_bad_files,
)

STOP_REASONS = {"eos", "max_new_tokens", "repetition"}


def json_lines(stdout: str) -> list[dict]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


@pytest.fixture
def cli(capsys):
    """`dotocr ARGS` in this process, with the libraries' logging settings put back afterwards."""
    with in_process_cli(capsys) as run:
        yield run


def problem_lines(stderr: str) -> list[str]:
    """stderr without the engine's one notice of what it loaded and why."""
    return [line for line in stderr.splitlines() if not line.startswith("dotocr: Loading ")]


def assert_clean_stderr(stderr: str) -> None:
    assert "Traceback" not in stderr
    for line in stderr.splitlines():
        assert line.startswith("dotocr"), f"stray stderr line: {line!r}"


# -- argument parsing and input expansion (in-process, no model) ------------------------------------

def test_parse_bbox_accepts_four_numbers_and_rejects_the_rest():
    assert parse_bbox("10,20,110,60") == (10, 20, 110, 60)
    assert parse_bbox(" 1.4, 2 ,3.6,4") == (1.4, 2, 3.6, 4)
    assert parse_bbox("1 2  3 4") == (1, 2, 3, 4)
    for bad in ("1,2,3", "a,b,c,d", "10,10,5,20", "10,10,20,10", "-1,0,5,5", "1,2,3,4,5", "1,2,inf,4"):
        with pytest.raises(Exception, match="four numbers|negative|empty"):
            parse_bbox(bad)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv, message", [
    (["ocr", "x.png", "--bbox", "1,2,3"], "four numbers"),
    (["ocr", "x.png", "--prompt", "grounding"], "needs a bounding box"),
    (["ocr", "x.png", "--prompt", "text", "--bbox", "1,2,30,40"], "only applies to the grounding prompt"),
    (["ocr", "x.png", "--format", "pdf"], "invalid choice"),
    (["ocr", "x.png", "--max-image-size", "10"], "--max-image-size: 10 must be from 28 to 8192, or 0"),
    (["ocr", "x.png", "--decoder", "vllm"], "invalid choice"),
    (["ocr"], "PATH"),
])
def test_usage_errors_exit_2_with_one_message(cli, argv, message):
    done = cli(*argv)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_parser_has_both_commands():
    parser = build_parser()
    assert parser.parse_args(["ocr", "a.png", "--local"]).local is True
    assert parser.parse_args(["doctor", "--json", "--ocr"]).json is True


def test_expand_inputs_folders_globs_stdin_in_order(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("b.png", "a.jpg", "c.webp"):
        (shots / name).write_bytes(b"x")
    (shots / "readme.txt").write_text("not an image")
    (shots / "sub").mkdir()
    (shots / "sub" / "deep.png").write_bytes(b"x")
    other = tmp_path / "other"
    other.mkdir()
    for name in ("z.png", "y.png", "y.bmp"):
        (other / name).write_bytes(b"x")

    expanded = expand_inputs([str(shots), str(other / "*.png"), "-", str(shots / "b.png"),
                              str(tmp_path / "missing.png"), str(tmp_path / "nothing-*.png")],
                             read_stdin=lambda: b"image bytes")
    names = [Path(i.name).name if i.name != "-" else "-" for i in expanded.images]
    assert names == ["a.jpg", "b.png", "c.webp", "y.png", "z.png", "-"]  # b.png once, sub/ not entered
    assert expanded.images[-1].source == b"image bytes"
    assert len(expanded.problems) == 2
    assert "missing.png: no such file" in expanded.problems[0]
    assert "nothing-*.png: no files match" in expanded.problems[1]


def test_expand_inputs_reports_empty_stdin_and_empty_folder(tmp_path):
    expanded = expand_inputs(["-", str(tmp_path)], read_stdin=lambda: b"")
    assert expanded.images == []
    assert "standard input was empty" in expanded.problems[0]
    assert "holds no images" in expanded.problems[1]


def test_folder_writer_never_reuses_a_name_or_an_input(tmp_path):
    a_png, a_jpg, notes = tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "scan.txt"
    inputs = [InputImage(str(p), p) for p in (a_png, a_jpg, notes)] + [InputImage("-", b"x")]
    writer = FolderWriter(tmp_path, "text", inputs)
    targets = [writer.target_for(i).name for i in inputs]
    assert targets == ["a.txt", "a.jpg.txt", "scan.txt.txt", "stdin.txt"]


@pytest.mark.skipif(sys.platform == "win32", reason="Windows fact: creating a symlink needs a privilege "
                    "(SeCreateSymbolicLinkPrivilege) that a normal user lacks")
def test_folder_writer_never_writes_through_a_planted_symlink(tmp_path):
    """The old fixed temporary name `a.txt.part`, planted as a link to another file, is not followed."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt.part").symlink_to(victim)
    (out / ".a.txt.tmp").symlink_to(victim)
    image = InputImage(str(tmp_path / "a.png"), tmp_path / "a.png")
    writer = FolderWriter(out, "text", [image])
    writer.prepare(image)
    assert writer.write(image, {"text": "result"}) == out / "a.txt"
    assert victim.read_text() == "precious"
    assert (out / "a.txt").read_text(encoding="utf-8") == "result\n"


def test_folder_writer_leaves_existing_files_alone_unless_told(tmp_path):
    image = InputImage(str(tmp_path / "a.png"), tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    mine = tmp_path / "out" / "a.txt"
    mine.write_text("the person's own notes")
    writer = FolderWriter(tmp_path / "out", "text", [image])
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        writer.prepare(image)
    with pytest.raises(FileExistsError):  # the write itself refuses too (the file may appear late)
        writer.write(image, {"text": "result"})
    assert mine.read_text() == "the person's own notes"
    replacing = FolderWriter(tmp_path / "out", "text", [image], overwrite=True)
    replacing.prepare(image)
    replacing.write(image, {"text": "result"})
    assert mine.read_text() == "result\n"


@pytest.mark.skipif(sys.platform == "win32", reason="Windows fact: creating a symlink needs a privilege "
                    "(SeCreateSymbolicLinkPrivilege) that a normal user lacks")
def test_linked_pictures_never_go_through_a_planted_symlink_nor_over_a_file(tmp_path):
    """--pictures link: the crops are written like results (issue 18, item 4)."""
    from PIL import Image

    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a-p2-picture1.png").symlink_to(victim)
    page = InputImage(str(tmp_path / "a.pdf"), tmp_path / "a.pdf")
    writer = FolderWriter(out, "markdown", [page])
    crop = Image.new("RGB", (4, 3), "red")
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        writer.save_picture(page, 2, 1, crop)
    assert victim.read_bytes() == b"precious"
    assert writer.save_picture(page, 2, 2, crop) == "a-p2-picture2.png"
    assert Image.open(out / "a-p2-picture2.png").size == (4, 3)
    replacing = FolderWriter(out, "markdown", [page], overwrite=True)
    replacing.save_picture(page, 2, 1, crop)  # --overwrite replaces the link itself, never its target
    assert victim.read_bytes() == b"precious" and not (out / "a-p2-picture1.png").is_symlink()


def test_names_with_line_breaks_cannot_forge_batch_headers():
    lines: list[str] = []
    writer = StdoutWriter("text", batch=True, write_line=lines.append)
    forged = "a.png <==\nfake text\n\n==> b.png"
    writer.write(InputImage(forged, b"x"), {"text": "real"})
    writer.write(InputImage("c\u202egnp.txt\x1b[2J", b"x"), {"text": "more"})
    printed = "\n".join(lines).splitlines()
    headers = [line for line in printed if line.startswith("==> ")]
    assert len(headers) == 2
    assert headers[0] == "==> a.png <==\\nfake text\\n\\n==> b.png <=="
    assert headers[1] == "==> c\\u202egnp.txt\\x1b[2J <=="
    assert shown_name("C:\\shots\\a.png") == "C:\\shots\\a.png"  # Windows paths are left readable


@pytest.mark.timeout(60)
def test_out_refuses_existing_results_before_loading_any_model(tmp_path):
    image = text_image(tmp_path / "a.png", (60, 30))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("keep me")
    done = run_dotocr("ocr", str(image), "--out", str(out), "--model", str(tmp_path / "no-such-model"),
                      "--local")
    assert done.returncode == 1
    assert "already exists; pass --overwrite" in done.stderr
    assert "no-such-model" not in done.stderr  # refused before the model was looked for
    assert (out / "a.txt").read_text() == "keep me"
    assert_clean_stderr(done.stderr)


def test_health_parsing_accepts_only_a_dotocr_health_body():
    server = parse_health("http://127.0.0.1:1", b'{"service": "dotocr", "status": "ready", "model": "m",'
                                                 b' "device": "cuda", "precision": "4bit"}')
    assert server is not None and server.status == "ready" and server.describe().endswith("(cuda, 4bit)")
    assert parse_health("http://x", b"<html>hello</html>") is None
    assert parse_health("http://x", b'["status"]') is None
    assert parse_health("http://x", b'{"service": "dotocr", "status": 3}') is None
    assert parse_health("http://x", b'{"status": "ready"}') is None  # some other program's health check


def test_same_model_compares_folders_by_location(tmp_path, monkeypatch):
    assert same_model("rednote-hilab/dots.ocr", "rednote-hilab/dots.ocr")
    assert not same_model("rednote-hilab/dots.ocr", "rednote-hilab/dots.mocr")
    monkeypatch.chdir(REPO)
    assert same_model("tests/data/dots_tiny", str(TINY))
    assert same_model(str(TINY) + "/", str(TINY))


@pytest.mark.timeout(30)
def test_probe_ignores_servers_that_are_not_dotocr(tmp_path):
    """A real HTTP server that is something else (here a static file server) is not mistaken for ours."""
    import http.server
    import threading

    (tmp_path / "health").write_text("<html>not dotocr</html>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        port = httpd.server_address[1]
        assert probe_server(port) is None
        (tmp_path / "health").write_text('{"status": "ready", "model": "m"}')  # not ours either
        assert probe_server(port) is None
        (tmp_path / "health").write_text('{"service": "dotocr", "status": "ready", "model": "m"}')
        found = probe_server(port)
        assert found is not None and found.status == "ready" and found.model == "m"
    finally:
        httpd.shutdown()
    started = time.monotonic()
    assert probe_server(port) is None  # nothing listens any more: refused at once
    assert time.monotonic() - started < 1.0


@pytest.mark.timeout(30)
def test_the_probe_has_one_deadline_for_the_whole_exchange():
    """Issue 18: a listener on api_port that trickles a byte every 0.2 s hung `dotocr ocr` for good: the 0.3 s
    applied to each read, not to the probe."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b" " * 10_000:
                if stop.wait(0.2):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        assert probe_server(port) is None
        assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        listener.close()
        thread.join(5)


# -- the real command with the tiny model -------------------------------------------------------------

@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    return {
        "wide": text_image(folder / "wide.png", (200, 60)),
        "odd": text_image(folder / "odd.jpg", (57, 31)),
        "tall": text_image(folder / "tall.png", (90, 300)),
    }


@pytest.mark.timeout(180)
def test_json_contract_one_object_per_image(cli, images):
    done = cli("ocr", str(images["wide"]), str(images["odd"]), "--format", "json", *TINY_FLAGS)
    assert done.returncode == 0, done.stderr
    assert_clean_stderr(done.stderr)
    results = json_lines(done.stdout)
    assert [r["file"] for r in results] == [str(images["wide"]), str(images["odd"])]

    from dotocr.engine.results import JSON_FIELDS

    expected_keys = set(JSON_FIELDS) - {"cells", "page", "dpi", "codes"}  # layout prompts, PDFs, codes only
    for result, size in zip(results, [(200, 60), (57, 31)], strict=True):
        assert set(result) == expected_keys
        assert (result["width"], result["height"]) == size
        assert result["prompt"] == "text"
        assert isinstance(result["text"], str) and isinstance(result["raw"], str)
        assert result["stop_reason"] in STOP_REASONS
        for key in ("image_tokens", "prompt_tokens", "generated_tokens"):
            assert isinstance(result[key], int) and result[key] >= 0
        assert result["image_tokens"] > 0 and result["prompt_tokens"] > result["image_tokens"]
        assert 1 <= result["generated_tokens"] <= 8
        assert result["device"] == "cpu" and result["precision"] == "fp32"
        assert set(result["timings"]) >= {"preprocess", "prefill", "decode", "total"}
        assert all(isinstance(v, float | int) and v >= 0 for v in result["timings"].values())
        assert result["peak_gpu_mb"] is None


@pytest.mark.timeout(240)
def test_text_and_markdown_print_what_json_carries(cli, images):
    """Greedy decoding is deterministic, so each format must print exactly the JSON's text field."""
    one = str(images["wide"])
    as_json = json_lines(cli("ocr", one, "--format", "json", *TINY_FLAGS).stdout)[0]
    as_text = cli("ocr", one, "--format", "text", *TINY_FLAGS)
    assert as_text.returncode == 0, as_text.stderr
    assert as_text.stdout == as_json["text"].rstrip("\n") + "\n"

    layout_json = json_lines(cli("ocr", one, "--format", "json", "--prompt", "layout",
                                        *TINY_FLAGS).stdout)[0]
    assert layout_json["prompt"] == "layout" and "cells" in layout_json
    as_markdown = cli("ocr", one, "--format", "markdown", *TINY_FLAGS)  # markdown picks layout
    assert as_markdown.returncode == 0, as_markdown.stderr
    assert as_markdown.stdout == layout_json["text"].rstrip("\n") + "\n"


@pytest.mark.timeout(180)
def test_text_batch_names_each_image(cli, images):
    done = cli("ocr", str(images["wide"]), str(images["tall"]), *TINY_FLAGS)
    assert done.returncode == 0, done.stderr
    headers = [line for line in done.stdout.splitlines() if line.startswith("==> ")]
    assert headers == [f"==> {images['wide']} <==", f"==> {images['tall']} <=="]


@pytest.mark.timeout(180)
def test_out_writes_one_file_per_image_and_never_an_input(cli, images, tmp_path):
    folder = images["wide"].parent
    disguised = folder / "scan.txt"  # an image with a .txt name: its result must not land on it
    Image.open(images["tall"]).save(disguised, format="PNG")
    disguised_bytes = disguised.read_bytes()
    twin = text_image(folder / "wide.jpg", (120, 40))  # same stem as wide.png

    out = tmp_path / "results" / "nested"
    done = cli("ocr", str(images["wide"]), str(twin), str(disguised), "--out", str(out),
                      "--format", "json", *TINY_FLAGS)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    written = sorted(p.name for p in out.iterdir())
    assert written == ["scan.json", "wide.jpg.json", "wide.json"]
    wide = json.loads((out / "wide.json").read_text(encoding="utf-8"))
    assert (wide["file"], wide["width"], wide["height"]) == (str(images["wide"]), 200, 60)
    assert json.loads((out / "wide.jpg.json").read_text(encoding="utf-8"))["width"] == 120

    done = cli("ocr", str(disguised), str(images["odd"]), "--out", str(folder), *TINY_FLAGS)
    assert done.returncode == 0, done.stderr
    assert disguised.read_bytes() == disguised_bytes
    assert (folder / "scan.txt.txt").is_file() and (folder / "odd.txt").is_file()
    assert (folder / "odd.txt").read_text(encoding="utf-8").endswith("\n")


@pytest.mark.timeout(180)
def test_folders_globs_and_stdin(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    text_image(shots / "b.png", (100, 40))
    text_image(shots / "a.png", (80, 50))
    (shots / "notes.md").write_text("# not an image, and skipped in folders")
    more = tmp_path / "more"
    more.mkdir()
    text_image(more / "x1.png", (64, 64))
    text_image(more / "x2.bmp", (70, 30))
    piped = tmp_path / "piped.png"
    text_image(piped, (150, 45))

    # The glob reaches dotocr unexpanded, as in Windows cmd: dotocr expands it itself.
    done = run_dotocr("ocr", str(shots), str(more / "*.png"), "-", "--format", "json", *TINY_FLAGS,
                      stdin=piped.read_bytes())
    assert done.returncode == 0, done.stderr
    results = json_lines(done.stdout)
    assert [r["file"] for r in results] == [str(shots / "a.png"), str(shots / "b.png"),
                                            str(more / "x1.png"), "-"]
    assert [(r["width"], r["height"]) for r in results] == [(80, 50), (100, 40), (64, 64), (150, 45)]


@pytest.mark.timeout(180)
def test_bad_files_are_named_and_the_batch_goes_on(images, tmp_path):
    bad = write_bad_files(tmp_path / "bad")
    missing = tmp_path / "bad" / "gone.png"
    order = [bad["not_image"], bad["truncated"], missing, bad["zero"], bad["bomb"], images["wide"]]
    done = run_dotocr("ocr", *map(str, order), "--format", "json", *TINY_FLAGS)

    assert done.returncode == 1
    assert_clean_stderr(done.stderr)
    results = json_lines(done.stdout)
    assert [r["file"] for r in results] == [str(images["wide"])]  # the good one, after all the bad
    lines = done.stderr.splitlines()
    for path in (bad["not_image"], bad["truncated"], missing, bad["zero"], bad["bomb"]):
        naming = [line for line in lines if path.name in line]
        assert len(naming) == 1, (path.name, lines)
    assert lines[-1] == "dotocr: 5 of 6 inputs failed."


@pytest.mark.timeout(120)
def test_one_bad_file_alone_exits_1_with_one_line(cli, tmp_path):
    bad = write_bad_files(tmp_path)
    done = cli("ocr", str(bad["bomb"]), *TINY_FLAGS)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = problem_lines(done.stderr)
    assert len(lines) == 1 and "bomb.png" in lines[0]
    assert_clean_stderr(done.stderr)


@pytest.mark.timeout(120)
def test_missing_model_is_one_sentence(images):
    done = run_dotocr("ocr", str(images["wide"]), "--model", "/nonexistent", "--device", "cpu", "--local")
    assert done.returncode == 1
    assert done.stdout == ""
    assert_clean_stderr(done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "/nonexistent" in lines[0], lines


@pytest.mark.timeout(120)
def test_grounding_with_a_bbox(cli, images):
    done = cli("ocr", str(images["wide"]), "--bbox", "10,5,150,50", "--format", "json", *TINY_FLAGS)
    assert done.returncode == 0, done.stderr
    (result,) = json_lines(done.stdout)
    assert result["prompt"] == "grounding"


@pytest.mark.timeout(180)
@pytest.mark.skipif(sys.platform == "win32", reason="Windows fact: there is no pseudo-terminal; the console is "
                    "covered under Wine by tests/test_windows_e2e.py")
def test_progress_bar_on_a_terminal_never_on_stdout(images):
    """stderr is a real pseudo-terminal here, as in a console; stdout is a pipe."""
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a fresh pty is 0 x 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-m", "dotocr", "ocr", str(images["wide"]), str(images["odd"]),
                              "--format", "json", *TINY_FLAGS],
                             stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env,
                             cwd=REPO)
    os.close(slave)
    terminal = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            terminal += chunk
        elif child.poll() is not None:
            break
    stdout = child.stdout.read().decode()
    child.wait(timeout=60)
    os.close(master)
    assert child.returncode == 0, terminal.decode(errors="replace")
    # the bar was drawn (how far it got before it cleared itself depends on timing; tqdm flips slow rates)
    assert b"/2 [" in terminal and (b"page/s" in terminal or b"s/page" in terminal)  # one step per image or page
    assert len(json_lines(stdout)) == 2  # stdout holds the two objects and nothing of the bar


@pytest.mark.timeout(120)
def test_no_progress_bar_when_stderr_is_not_a_terminal(cli, images):
    done = cli("ocr", str(images["wide"]), str(images["odd"]), *TINY_FLAGS)
    assert done.returncode == 0
    assert problem_lines(done.stderr) == []
    assert "in fp32 on cpu: fp32 on CPU as requested" in done.stderr  # what was chosen, and why


def _dotocr_child(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "dotocr", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=REPO)


@pytest.mark.timeout(180)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Windows fact: there are no FIFOs, and SIGINT "
                    "cannot be sent to one child process; the wait reads Linux's /proc")
def test_ctrl_c_exits_130_quietly(tmp_path):
    """Issue 18: the interrupt always lands mid-run. The second input is a FIFO whose writer stays open and
    never finishes the image, so the batch cannot end before the signal (40 tiny images once could)."""
    text_image(tmp_path / "first.png", (160, 60))
    fifo = tmp_path / "never-ends.png"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # a writer that stays: a reader waits for more, never for the end
    try:
        noise = Image.frombytes("L", (256, 256), random.Random(0).randbytes(256 * 256))
        noise.save(tmp_path / "noise.png")
        # exactly the 1 KiB the PDF check reads: it sees a PNG's head, and every later read waits for more
        os.write(writer, (tmp_path / "noise.png").read_bytes()[:1024])
        child = _dotocr_child("ocr", str(tmp_path / "first.png"), str(fifo), "--format", "json", *TINY_FLAGS)
        first = child.stdout.readline()  # the model is loaded and the first image read
        assert first.startswith(b"{"), child.stderr.read()
        _wait_until_open(child.pid, fifo)  # now reading the second input: the first is counted as done
        child.send_signal(signal.SIGINT)
        rest, stderr = child.communicate(timeout=60)
    finally:
        os.close(writer)
    assert child.returncode == 130 and rest == b""
    assert b"Traceback" not in stderr and b"KeyboardInterrupt" not in stderr
    assert b"interrupted after 1 of 2 pages and inputs; the results read so far are above." in stderr


def _wait_until_open(pid: int, path: Path, timeout: float = 60.0) -> None:
    """Until process `pid` has `path` open (Linux: its /proc/PID/fd links)."""
    deadline = time.monotonic() + timeout
    while True:
        for link in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(link) == str(path):
                    return
            except OSError:
                continue
        assert time.monotonic() < deadline, f"{path} was never opened"
        time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _renderers_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"pdf_worker.py" in (entry / "cmdline").read_bytes() and int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.timeout(180)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches the renderer in /proc (Windows fact: "
                    "there is no /proc)")
def test_ctrl_c_during_a_pdf_keeps_the_pages_read_under_out(tmp_path):
    """Issue 18: Ctrl-C during a PDF with --out lost every page read (exit 130, no message, no file). The third
    page renders for minutes, so the interrupt lands while it does, after the first two were read."""
    from pdf_bombs import slow_forms

    (tmp_path / "doc.pdf").write_bytes(slow_forms(plain_before=2))
    out = tmp_path / "out"
    child = _dotocr_child("ocr", str(tmp_path / "doc.pdf"), "--out", str(out), "--format", "json", *TINY_FLAGS)
    try:
        deadline = time.monotonic() + 150
        while True:  # page 3 renders once pages 1 and 2 are read; it alone keeps its renderer busy this long
            assert child.poll() is None, child.stderr.read()
            busy = [pid for pid in _renderers_of(child.pid) if _cpu_seconds(pid) > 1.0]
            if busy:
                break
            assert time.monotonic() < deadline, "the third page never started rendering"
            time.sleep(0.1)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    text = stderr.decode()
    assert child.returncode == 130 and "Traceback" not in text, text
    assert [page["page"] for page in json.loads((out / "doc.json").read_text())] == [1, 2]
    assert "interrupted after 2 of 3 pages and inputs; the results read so far are in" in text
    assert "doc.json holds only the 2 pages of its PDF read before the interrupt (page 1, 2)." in text
    deadline = time.monotonic() + 10
    while Path(f"/proc/{busy[0]}").exists() and "Z" not in Path(f"/proc/{busy[0]}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the renderer outlived the interrupted run"
        time.sleep(0.1)


@pytest.mark.timeout(60)
def test_an_out_folder_that_cannot_be_written_is_said_before_any_work(cli, tmp_path, images):
    """Issue 18: an unwritable --out was found only after every page had been read."""
    if os.name == "nt":
        pytest.skip("Windows fact: a folder refuses files through its ACL, and this test takes the right "
                    "away with chmod, which Windows ignores for folders")
    if os.geteuid() == 0:
        locked = Path("/sys")  # refuses new files even to root
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
    started = time.monotonic()
    done = cli("ocr", str(images["wide"]), "--out", str(locked), *TINY_FLAGS)
    assert done.returncode == 1 and time.monotonic() - started < 10
    assert f"the output folder {locked} cannot be written to" in done.stderr and "choose another --out" in done.stderr
    assert "Loading" not in done.stderr  # no model was loaded, no image read


@pytest.mark.timeout(60)
def test_ten_thousand_inputs_of_one_name_are_named_at_once(tmp_path):
    """Issue 18: 3000 inputs named page.png took 26 s to name, 9000 took 210 s, and past 9,999 the writer raised."""
    from dotocr.cli.inputs import InputImage
    from dotocr.cli.outputs import FolderWriter

    inputs = [InputImage(f"d{n}/page.png", tmp_path / f"d{n}" / "page.png") for n in range(12_000)]
    inputs.append(InputImage("d0/page-5.png", tmp_path / "out" / "page-5.txt"))  # an input where a name would go
    started = time.monotonic()
    writer = FolderWriter(tmp_path / "out", "text", inputs)
    assert time.monotonic() - started < 5
    names = [writer.target_for(image).name for image in inputs]
    assert names[:4] == ["page.txt", "page.png.txt", "page-2.txt", "page-3.txt"]
    assert len(set(names)) == len(names) and "page-5.txt" not in names and names[-2] == "page-12000.txt"


@pytest.mark.timeout(120)
def test_model_loads_once_for_the_whole_batch(images, monkeypatch, capsys):
    """In-process: the real loader is wrapped to count how often a checkpoint is really read."""
    import dotocr.engine.inference as inference
    from dotocr.cli import main

    calls = []
    real_load = inference.load_checkpoint

    def counting_load(*args, **kwargs):
        calls.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(inference, "load_checkpoint", counting_load)
    code = main(["ocr", *(str(p) for p in images.values()), "--format", "json", *TINY_FLAGS])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(json_lines(captured.out)) == 3
    assert len(calls) == 1


# -- one warm model per machine: reusing a running dotocr-serve ---------------------------------------

@pytest.mark.timeout(300)
def test_uses_a_running_server_instead_of_loading_a_second_model(cli, images, tmp_path):
    port = free_port()
    settings = Path(os.environ["DOTOCR_CONFIG"])
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(f"api_port = {port}\n", encoding="utf-8")
    log_path = tmp_path / "server.log"
    with warm_server(port, log_path):
        done = cli("ocr", str(images["wide"]), "--format", "json", "--model", str(TINY), "--max-new-tokens", "8")
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines() == [
            f"dotocr: using the dotocr server at http://127.0.0.1:{port} (cpu, fp32); "
            "pass --local to load the model here"]
        (result,) = json_lines(done.stdout)
        assert result["device"] == "remote cpu" and result["precision"] == "fp32"
        assert (result["file"], result["width"], result["height"]) == (str(images["wide"]), 200, 60)
        assert 1 <= result["generated_tokens"] <= 8
        served = log_path.read_text().count("POST /v1/chat/completions")
        assert served == 1

        # --local never asks the server
        done = cli("ocr", str(images["wide"]), "--format", "json", *TINY_FLAGS)
        assert done.returncode == 0 and problem_lines(done.stderr) == []
        assert json_lines(done.stdout)[0]["device"] == "cpu"

        # a server running another model is not used for this one
        done = cli("ocr", str(images["wide"]), "--model", "/nonexistent", "--device", "cpu")
        assert done.returncode == 1
        lines = done.stderr.splitlines()
        assert lines[0].startswith(f"dotocr: a dotocr server at http://127.0.0.1:{port} runs ")
        assert lines[0].endswith("not /nonexistent; loading the model here")
        assert "The model folder /nonexistent does not exist" in lines[1]
        assert log_path.read_text().count("POST /v1/chat/completions") == served
