"""A flag parser in runc's (Go's) manner, small enough to cost nothing at start-up.

Flags come before positional arguments and parsing stops at the first one (so ``exec ID CMD -x``
keeps ``-x`` for CMD); ``-flag`` and ``--flag`` are the same; values come as ``--flag V`` or
``--flag=V``; booleans take an optional ``=true``/``=false``.
"""

from collections.abc import Sequence

__all__ = ["BOOL", "MULTI", "VALUE", "Options", "UsageError", "flag_table", "parse"]

BOOL, VALUE, MULTI = "bool", "value", "multi"

Options = dict[str, "bool | str | list[str] | None"]


class UsageError(Exception):
    """A command line that cannot be understood."""


def parse(argv: Sequence[str], flags: dict[str, tuple[str, str]]) -> tuple[Options, list[str]]:
    """``flags`` maps every spelling (without dashes) to (option name, kind). Returns the options
    (bool False, None or [] when absent) and the positional arguments."""
    options: Options = {}
    for name, kind in flags.values():
        options[name] = False if kind == BOOL else [] if kind == MULTI else None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        key, eq, value = arg.lstrip("-").partition("=")
        if key not in flags:
            raise UsageError(f"flag provided but not defined: {arg}")
        name, kind = flags[key]
        if kind == BOOL:
            if eq and value not in ("true", "false", "1", "0"):
                raise UsageError(f"invalid boolean value {value!r} for {arg}")
            options[name] = not eq or value in ("true", "1")
        else:
            if not eq:
                i += 1
                if i == len(argv):
                    raise UsageError(f"flag needs an argument: {arg}")
                value = argv[i]
            if kind == MULTI:
                current = options[name]
                assert isinstance(current, list)
                current.append(value)
            else:
                options[name] = value
        i += 1
    return options, list(argv[i:])


def flag_table(*entries: tuple[str, str]) -> dict[str, tuple[str, str]]:
    """``("pid-file", VALUE)``, ``("d|detach", BOOL)``: the option is named by its last spelling,
    with dashes as underscores."""
    table = {}
    for spellings, kind in entries:
        names = spellings.split("|")
        for s in names:
            table[s] = (names[-1].replace("-", "_"), kind)
    return table
