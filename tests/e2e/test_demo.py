"""The README's first command: the whole pipeline on the embedded emulator."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jobctl.demo import DemoResult, run_demo
from jobctl.evaluate import PROJECT_DIR

MIB = 1024 * 1024


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def children_running_task() -> list[str]:
    """Processes started by this one that are still `python -m task`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = re.search(r"^PPid:\s+(\d+)", status, re.MULTILINE)
        if parent and int(parent[1]) == os.getpid() and "-m task" in command:
            found.append(command)
    return found


def port_is_closed(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("http://").split(":")
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, int(port))) != 0


def run(files: list[Path], **options: object) -> tuple[DemoResult, list[str]]:
    lines: list[str] = []
    result = run_demo(files, say=lines.append, **options)  # type: ignore[arg-type]
    return result, lines


def test_every_upload_gets_a_task_and_a_result_with_the_sha256_of_its_bytes(
    tmp_path: Path,
) -> None:
    files = [
        write(tmp_path, "rapport été 2026 (final).csv", b"a,b\n" * 1000),
        write(tmp_path, "naïve notes 🚀 + more.txt", "héllo wörld\n".encode() * 10),
        write(tmp_path, "big.bin", os.urandom(20 * MIB)),
    ]
    result, lines = run(files)
    assert result.exit_code == 0, "\n".join(lines)
    assert [o.key for o in result.outcomes] == [f"uploads/{f.name}" for f in files]
    for path, outcome in zip(files, result.outcomes, strict=True):
        assert outcome.result is not None, outcome.failure
        assert outcome.result_key == f"results/uploads/{path.name}.json"
        assert outcome.result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert outcome.result["size"] == path.stat().st_size
        assert outcome.result["key"] == f"uploads/{path.name}"
        assert outcome.exit_code == 0
        assert outcome.task_arn is not None
    assert "3 of 3 uploads processed successfully" in lines
    assert any("started 0 runs" in line for line in lines), "results must not trigger runs"


def test_a_failing_task_makes_the_run_exit_non_zero_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASK_PROCESSOR", "tests.e2e.processors:fail_when_marked")
    files = [write(tmp_path, "fine.txt", b"ok\n"), write(tmp_path, "broken input.txt", b"??\n")]
    result, lines = run(files)
    assert result.exit_code == 1
    fine, broken = result.outcomes
    assert fine.ok
    assert broken.exit_code == 6
    assert broken.result is None
    failed = [line for line in lines if line.startswith("FAILED")]
    assert failed == [
        "FAILED   uploads/broken input.txt: task: exited with code 6: " + broken.log[-1]
    ]
    assert "cannot parse uploads/broken input.txt" in broken.log[-1]


def test_nothing_is_left_running_after_the_demo(tmp_path: Path) -> None:
    result, _ = run([write(tmp_path, "one.txt", b"1\n")])
    assert result.exit_code == 0
    assert result.endpoint is not None
    assert port_is_closed(result.endpoint)
    assert children_running_task() == []


def test_the_demo_follows_the_stack_configuration(tmp_path: Path) -> None:
    # No second copy of the settings: a different upload prefix in the config is what the
    # emulator's notification filter, the runner and the task all use.
    result, lines = run(
        [write(tmp_path, "data.csv", b"x,y\n1,2\n")],
        overrides={"uploadPrefix": "inbox/", "resultPrefix": "out/"},
    )
    assert result.exit_code == 0, "\n".join(lines)
    (outcome,) = result.outcomes
    assert outcome.key == "inbox/data.csv"
    assert outcome.result_key == "out/inbox/data.csv.json"


def test_the_job_gets_the_variables_the_stack_configures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "exported-for-the-demo")
    # A processor outside task/ only as the shell names it: the stack's config may name only
    # what the default image holds (a test below).
    monkeypatch.setenv("TASK_PROCESSOR", "tests.e2e.processors:with_settings")
    result, lines = run(
        [write(tmp_path, "data.csv", b"x,y\n1,2\n")],
        overrides={
            "taskEnvironment": ["GREETING=hello from Pulumi.dev.yaml"],
            "taskSecrets": ["API_TOKEN=ssm:/jobs/api-token"],
        },
    )
    assert result.exit_code == 0, "\n".join(lines)
    (outcome,) = result.outcomes
    assert outcome.result is not None
    assert outcome.result["greeting"] == "hello from Pulumi.dev.yaml"
    # The emulator has no parameter store: the demo says so, and passes what the shell exports.
    assert outcome.result["apiToken"] == "exported-for-the-demo"
    assert any("secrets API_TOKEN: not read here" in line for line in lines), lines


def test_a_stack_processor_the_image_would_not_hold_stops_the_demo_naming_the_key(
    tmp_path: Path,
) -> None:
    result, lines = run(
        [write(tmp_path, "data.csv", b"x\n")],
        overrides={"taskProcessor": "task.nosuch:process"},
    )
    assert result.exit_code == 2
    (line,) = lines
    assert "taskProcessor = 'task.nosuch:process' is not valid" in line
    assert result.endpoint is None  # stopped before the emulator started


def test_the_prod_stack_reads_each_upload_by_its_version(tmp_path: Path) -> None:
    result, lines = run([write(tmp_path, "v.txt", b"versioned\n")], stack="prod")
    assert result.exit_code == 0, "\n".join(lines)
    (outcome,) = result.outcomes
    assert outcome.result is not None
    assert outcome.result["versionId"]


def test_a_file_that_does_not_exist_is_named_before_anything_starts(tmp_path: Path) -> None:
    result, lines = run([tmp_path / "missing.csv"])
    assert result.exit_code == 2
    assert lines == [f"error: {tmp_path / 'missing.csv'} is not a file; name files to upload, "
                     "or none for a sample"]  # fmt: skip


def demo_command(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobctl", "demo", *args],
        cwd=PROJECT_DIR,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_readme_command_runs_the_generated_sample_end_to_end() -> None:
    done = demo_command()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no files given: uploading a generated sample of 3 files" in done.stdout
    assert "3 of 3 uploads processed successfully" in done.stdout
    for step in ("emulator", "provision", "upload", "event", "runner", "task", "exit", "stopped",
                 "result", "show", "loop"):  # fmt: skip
        assert re.search(rf"^{step}\b", done.stdout, re.MULTILINE), step
    # Each task's stop reaches the runner as EventBridge delivers it, and settles its job.
    assert done.stdout.count("stopped  EssentialContainerExited") == 3
    assert done.stdout.count("→ runner: job succeeded") == 3
    # What `jobctl show` prints for the first upload of the sample.
    shown = done.stdout.split("\nshow     ", 1)[1]
    assert "s3://" in shown.splitlines()[1]
    assert "quarterly report 2026.csv" in shown.splitlines()[1]
    assert "succeeded after 1 attempt" in shown
    assert "attempt 1  FARGATE  task " in shown
    assert "succeeded; EssentialContainerExited; exit 0" in shown
    assert "logs: aws logs get-log-events --endpoint-url http://127.0.0.1:" in shown
    assert re.search(
        r"result     s3://\S+/results/uploads/quarterly report 2026\.csv\.json \(\d+ bytes", shown
    )


def test_paths_read_from_stdin_are_processed_until_end_of_input(tmp_path: Path) -> None:
    first = write(tmp_path, "first.txt", b"1\n")
    second = write(tmp_path, "second file.txt", b"2\n2\n")
    done = demo_command("--stdin", stdin=f"{first}\n{second}\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 of 2 uploads processed successfully" in done.stdout


def test_help_explains_every_option() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobctl", "demo", "--help"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    for option in ("files", "--stack", "--watch", "--stdin", "--docker"):
        assert option in done.stdout


def test_watch_mode_processes_files_dropped_into_the_folder_until_ctrl_c(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-m", "jobctl", "demo", "--watch", str(inbox)],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdout is not None
    seen: list[str] = []
    try:
        for line in child.stdout:  # bounded by the timeout below via kill in finally
            seen.append(line)
            if line.startswith("watching"):
                write(inbox, "dropped file.txt", b"dropped\n")
            if line.startswith("result"):
                child.send_signal(signal.SIGINT)
                break
        try:
            rest, _ = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            rest, _ = child.communicate()
            pytest.fail("the demo did not stop within 30 s of Ctrl-C:\n" + "".join(seen) + rest)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    output = "".join(seen) + rest
    assert child.returncode == 0, output
    assert "uploads/dropped file.txt" in output
    assert "1 of 1 uploads processed successfully" in output


def test_a_burst_waits_for_slots_drains_without_exceeding_the_cap_and_retries_an_interruption() -> (
    None
):
    result, lines = run([], burst=10, overrides={"maxConcurrentTasks": 3})
    assert result.exit_code == 0, "\n".join(lines)
    assert len(result.outcomes) == 10
    assert all(outcome.ok for outcome in result.outcomes)
    pictures = [re.findall(r"\d+", line) for line in lines if line.startswith("jobs ")]
    waiting = [int(numbers[0]) for numbers in pictures]
    running = [int(numbers[1]) for numbers in pictures]
    assert max(waiting) >= 7, "the burst never waited for a slot"
    assert max(running) == 3
    assert waiting[-1] == 0
    assert "status   tasks         0 pending, 0 running (cap 3)" in lines
    assert "status   batch         10 of 10 done (10 succeeded, 0 failed)" in "\n".join(lines)

    # One task was interrupted as Spot reclaims one; the runner retried it, and it succeeded.
    (interrupted,) = [o for o in result.outcomes if any(run.interrupted for run in o.runs)]
    first, second = interrupted.runs
    assert (first.attempt, first.exit_code, first.stop_code) == (1, 143, "SpotInterruption")
    assert (second.attempt, second.exit_code) == (2, 0)
    assert any(
        line.startswith(f"spot     {interrupted.key}: task ") and "exit 143" in line
        for line in lines
    )
    assert f"retried  {interrupted.key}: interrupted on attempt 1, succeeded on attempt 2" in lines
    timeline = "\n".join(lines).split(f"retried  {interrupted.key}", 1)[1]
    assert "succeeded after 2 attempts" in timeline
    assert "attempt 1  FARGATE_SPOT  task " + first.task_arn.rsplit("/", 1)[-1] in timeline
    assert "spot-interruption; SpotInterruption; exit 143" in timeline
    assert "attempt 2  FARGATE_SPOT  task " + second.task_arn.rsplit("/", 1)[-1] in timeline
