"""
C{python -m ccx.cli.manpage > ccx.1}: the manual page of C{ccx}, built from
the same L{usage.Options} as C{--help}, so that it names every command and
option there is.
"""

import sys
from typing import Any, List

from ccx import __version__

EXIT_STATUS = [
    ("0", "success; run, attach, wait: the program exited 0"),
    ("N", "run, attach, wait: the program's exit code"),
    ("128+N", "run, attach, wait: signal N ended the program"),
    ("124", "run, attach, wait: the program was ended by --timeout"),
    ("130", "Ctrl-C: the program was cancelled, or ccx left (detached with --keep)"),
    (
        "143",
        "run, attach, wait, logs -f: the program was cancelled by someone else, or the "
        "connection to the service closed before it ended (the service stopped)",
    ),
    ("141", "nobody reads ccx's output any more"),
    ("126", "run: the service refused the command (allow-list, environment)"),
    ("127", "run: the service could not start the program"),
    (
        "1",
        "the service refused the request: unknown id, ambiguous prefix, rm of a running "
        "process, write to a process without stdin, ...",
    ),
    ("2", "wrong arguments; the service cannot be reached; the token was refused"),
]

ENVIRONMENT = [
    ("CCX_URL", "the service's WebSocket URL (--url)"),
    ("CCX_TOKEN", "the bearer token itself"),
    ("CCX_TOKEN_FILE", "a file holding the bearer token (--token-file)"),
    ("CCX_CACERT", "a PEM certificate to trust for wss:// (--cacert)"),
]


def roff(text: str) -> str:
    """
    C{text} as roff text: backslashes and hyphens escaped, no line starting
    with a control character.
    """
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line if line[:1] in ".'" else line) for line in text.splitlines())


def _options(options: Any) -> List[str]:
    lines = []
    values = {name[:-1] for name in options.longOpt if name.endswith("=")}
    shorts = {canonical: short for short, canonical in options.synonyms.items() if len(short) == 1}
    for name in sorted(n.rstrip("=") for n in options.longOpt):
        if name in ("help", "version") or name in ("url", "token-file", "cacert"):
            continue
        spelling = f"\\fB\\-\\-{roff(name)}\\fR"
        if name in shorts:
            spelling = f"\\fB\\-{shorts[name]}\\fR, " + spelling
        if name in values:
            spelling += " \\fI" + name.upper().replace("-", "_") + "\\fR"
        lines += [".TP", spelling, roff(options.docs.get(name) or "")]
    return lines


def manpage(top: Any) -> str:
    """
    The page, in roff (man(7)), for the L{Options} C{top}.
    """
    lines = [
        f'.TH CCX 1 "" "ccx {__version__}" "User Commands"',
        ".SH NAME",
        "ccx \\- run and steer programs on a ccx service",
        ".SH SYNOPSIS",
        "\\fBccx\\fR [\\fB\\-\\-url\\fR \\fIURL\\fR] [\\fB\\-\\-token\\-file\\fR \\fIFILE\\fR] "
        "\\fICOMMAND\\fR [\\fIoptions\\fR] [\\fIargs\\fR]",
        ".SH DESCRIPTION",
        roff(top.longdesc),
        ".SH GLOBAL OPTIONS",
        "These may be given before or after the command.",
    ]
    lines += [
        ".TP",
        "\\fB\\-u\\fR, \\fB\\-\\-url\\fR \\fIURL\\fR",
        roff(top.docs["url"]),
        ".TP",
        "\\fB\\-\\-token\\-file\\fR \\fIFILE\\fR",
        roff(top.docs["token-file"]),
        ".TP",
        "\\fB\\-\\-cacert\\fR \\fIFILE\\fR",
        roff(top.docs["cacert"]),
        ".TP",
        "\\fB\\-h\\fR, \\fB\\-\\-help\\fR",
        "Show the options of ccx, or of a command, and exit.",
        ".TP",
        "\\fB\\-\\-version\\fR",
        "Print the version and exit.",
        ".SH COMMANDS",
    ]
    for name, _short, options_class, summary in top.subCommands:
        options = options_class()
        lines += [
            f".SS {roff(options.synopsis)}",
            roff(getattr(options, "longdesc", "") or summary),
        ]
        lines += _options(options)
    lines.append(".SH ENVIRONMENT")
    for name, meaning in ENVIRONMENT:
        lines += [".TP", f"\\fB{name}\\fR", roff(meaning)]
    lines.append(".SH EXIT STATUS")
    for status, meaning in EXIT_STATUS:
        lines += [".TP", f"\\fB{status}\\fR", roff(meaning)]
    lines += [
        ".SH SEE ALSO",
        "\\fBtwistd\\fR(1); docs/cli.md, docs/protocol.md and docs/mcp.md of ccx.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    from ccx.cli.main import Options

    sys.stdout.write(manpage(Options()))


if __name__ == "__main__":
    main()
