"""Python's qemu.qmp (a QMP client we did not write) against `qmp serve`.

Usage: python qemu_qmp_client.py SOCKET | tcp:HOST:PORT
Connects, negotiates (qemu.qmp enables oob when offered), runs commands, receives events and errors, and runs an
OOB command. Prints one line per check; exits non-zero on the first failure.
"""
import asyncio
import sys

from qemu.qmp import ExecuteError, QMPClient


def address(arg: str):
    """A unix socket path, or (host, port) for tcp:HOST:PORT."""
    if arg.startswith("tcp:"):
        host, port = arg[len("tcp:"):].rsplit(":", 1)
        return (host, int(port))
    return arg


async def main(arg: str) -> None:
    qmp = QMPClient("qmp-rs-test")
    await qmp.connect(address(arg))
    print(f"transport: {'tcp' if arg.startswith('tcp:') else 'unix'}")
    greeting = qmp.greeting
    assert greeting is not None
    version = greeting.QMP.version["qemu"]
    assert version["major"] == 10, version
    assert "oob" in greeting.QMP.capabilities
    print(f"connected: QEMU {version['major']}.{version['minor']}.{version['micro']}, caps {greeting.QMP.capabilities}")

    res = await qmp.execute("query-version")
    assert res["qemu"]["major"] == 10, res
    print(f"query-version: {res['package']}")
    res = await qmp.execute("query-status")
    assert res == {"status": "running", "running": True}, res
    print(f"query-status: {res}")
    cmds = await qmp.execute("query-commands")
    assert {"name": "query-qmp-schema"} in cmds, cmds
    schema = await qmp.execute("query-qmp-schema")
    assert any(e.get("name") == "blockdev-add" for e in schema)
    print(f"query-commands: {len(cmds)} commands; query-qmp-schema: {len(schema)} entries")

    with qmp.listener(("STOP", "RESUME")) as listener:
        await qmp.execute("stop")
        event = await asyncio.wait_for(listener.get(), 5)
        assert event["event"] == "STOP", event
        assert "seconds" in event["timestamp"] and "microseconds" in event["timestamp"]
        await qmp.execute("cont")
        event = await asyncio.wait_for(listener.get(), 5)
        assert event["event"] == "RESUME", event
    print("events: STOP, RESUME")

    errors = [
        ("no-such-command", None, "CommandNotFound", "The command no-such-command has not been found"),
        ("blockdev-del", None, "GenericError", "Parameter 'node-name' is missing"),
        ("blockdev-del", {"node-name": 5}, "GenericError", "Invalid parameter type for 'node-name', expected: string"),
        ("query-version", {"x": 1}, "GenericError", "Parameter 'x' is unexpected"),
    ]
    for cmd, args, cls, desc in errors:
        try:
            await qmp.execute(cmd, args)
        except ExecuteError as err:
            assert err.error_class == cls and err.error.error.desc == desc, (err.error_class, err.error.error.desc)
            print(f"error: {cmd}: {cls}: {desc}")
        else:
            raise AssertionError(f"{cmd} should fail")

    res = await qmp.execute("x-ping", oob=True)
    assert res == {"pong": True}, res
    try:
        await qmp.execute("query-status", oob=True)
    except ExecuteError as err:
        assert err.error.error.desc == "The command query-status does not support OOB", err.error.error.desc
    else:
        raise AssertionError("query-status should not run out of band")
    print("oob: x-ping answered out of band; query-status refused")

    await qmp.disconnect()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
