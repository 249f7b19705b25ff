"""Run a function in a forked child process and get its result back (the fork tests of the fast paths)."""
import multiprocessing


def _call(conn, fn, args):
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # (pytest.fail raises a BaseException)
        conn.send(("error", repr(exc)))
    conn.close()


def run_in_fork(fn, *args, timeout=60):
    """``fn(*args)`` in a child forked from this process: its return value. Fails with the child's exception, or
    when no answer comes within ``timeout`` seconds (a child stuck on a lock or a thread it does not have)."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    process = context.Process(target=_call, args=(child, fn, args))
    process.start()
    child.close()  # (so that a child dying without an answer ends the wait below)
    try:
        assert parent.poll(timeout), f"the forked child gave no answer within {timeout} s"
        status, value = parent.recv()
    finally:
        process.join(timeout)
        if process.is_alive():
            process.kill()
    assert status == "ok", value
    assert process.exitcode == 0
    return value
