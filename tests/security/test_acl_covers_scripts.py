"""The documented minimum ACL covers every command the Lua scripts call.

Found without a Redis: a script change that calls a new command (a new index type, say) must
extend the ACL, or a deployment with the documented user would refuse it at run time.
"""

from __future__ import annotations

import re

from cross_instance.lua import LUA_ROOT
from tests.security.tls_redis import DAEMON_COMMANDS

_CALL = re.compile(r"""(?:rcall|redis\.call|redis\.pcall)\(\s*['"]([A-Za-z]+)['"]""")


def test_every_command_a_script_calls_is_in_the_daemon_acl() -> None:
    called = {
        match.lower()
        for path in LUA_ROOT.rglob("*.lua")
        for match in _CALL.findall(path.read_text(encoding="utf-8"))
    }
    assert called, "no redis.call found: the pattern is stale"
    allowed = {command.split("|")[0] for command in DAEMON_COMMANDS}
    assert called - allowed == set(), "commands the scripts call but the minimum ACL refuses"
