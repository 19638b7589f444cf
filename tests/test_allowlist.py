"""
Tests for L{ccx.process.allowlist} and L{ccx.process.command}.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from ccx.config import DEFAULT_DENY_ENV
from ccx.process.allowlist import SHELL, AllowList, AllowListError
from ccx.process.command import Command, base_environment, build_command
from ccx.process.errors import ProcessError
from ccx.rpc.errors import COMMAND_NOT_ALLOWED, INVALID_PARAMS, rpc_error


class ProgramsMixin:
    """
    A temporary directory with a C{bin} of small programs:
    C{tool} and C{other} (executable), C{data} (not executable).
    """

    def setUp(self):
        self.base = os.path.realpath(self.mktemp())
        self.bin = os.path.join(self.base, "bin")
        self.work = os.path.join(self.base, "work")
        os.makedirs(self.bin)
        os.makedirs(self.work)
        self.tool = self.program("tool")
        self.other = self.program("other")
        self.data = os.path.join(self.bin, "data")
        with open(self.data, "w") as f:
            f.write("not a program\n")

    def program(self, name, directory=None):
        path = os.path.join(directory or self.bin, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\necho %s\n" % (name,))
        os.chmod(path, 0o755)
        return path

    def allow(self, *programs):
        return AllowList(programs, search_path=self.bin)

    def assertRPCError(self, code, f, *args, **kwargs):
        """
        C{f(*args, **kwargs)} raises an L{RPCError} with C{code}; return its
        message.
        """
        error = rpc_error(self.assertRaises(ProcessError, f, *args, **kwargs))
        self.assertEqual(error.code, code)
        return error.message


class AllowListTests(ProgramsMixin, SynchronousTestCase):
    """
    Tests for L{AllowList}.
    """

    def test_by_name(self):
        """A program allowed by name resolves, by name, to its real path."""
        self.assertEqual(self.allow("tool").resolve("tool", self.work), self.tool)

    def test_by_absolute_path(self):
        """A program allowed by name may be run by its absolute path."""
        self.assertEqual(self.allow("tool").resolve(self.tool, self.work), self.tool)

    def test_allowed_by_absolute_path(self):
        """A program allowed by absolute path may be run by name."""
        allow_list = AllowList([self.tool], search_path=self.bin)
        self.assertEqual(len(allow_list), 1)
        self.assertEqual(allow_list.resolve("tool", self.work), self.tool)

    def test_search_path_used(self):
        """Names are looked up on the given search path only."""
        allow_list = AllowList([self.tool], search_path=self.work)
        self.assertEqual(allow_list.resolve(self.tool, "/"), self.tool)
        message = self.assertRPCError(
            COMMAND_NOT_ALLOWED, allow_list.resolve, "tool", self.work
        )
        self.assertIn("'tool'", message)

    def test_relative_path(self):
        """A relative path is resolved against the command's directory."""
        allow_list = self.allow("tool")
        self.assertEqual(allow_list.resolve("bin/tool", self.base), self.tool)
        self.assertEqual(allow_list.resolve("./tool", self.bin), self.tool)

    def test_dotdot_refused(self):
        """A path with a '..' component is refused, even when it reaches an allowed program."""
        message = self.assertRPCError(
            COMMAND_NOT_ALLOWED, self.allow("tool").resolve, "../bin/tool", self.work
        )
        self.assertIn("'..'", message)

    def test_relative_search_path_entries_ignored(self):
        """'.' and empty PATH entries are not searched: they would mean the service's own directory."""
        allow_list = AllowList([self.tool], search_path=f".:{self.work}:")
        self.assertEqual(allow_list.search_path, self.work)

    def test_relative_path_elsewhere(self):
        """A relative path that names nothing in that directory is refused."""
        self.assertRPCError(
            COMMAND_NOT_ALLOWED, self.allow("tool").resolve, "./tool", self.work
        )

    def test_symlink_to_other_program(self):
        """A link named like an allowed program but leading elsewhere is refused."""
        link = os.path.join(self.work, "tool")
        os.symlink(self.other, link)
        allow_list = self.allow("tool")
        message = self.assertRPCError(
            COMMAND_NOT_ALLOWED, allow_list.resolve, link, self.work
        )
        self.assertIn(self.other, message)
        self.assertRPCError(
            COMMAND_NOT_ALLOWED, allow_list.resolve, "./tool", self.work
        )

    def test_symlink_on_path_to_other_program(self):
        """A link found by name on the search path is judged by its target."""
        first = os.path.join(self.base, "first")
        os.makedirs(first)
        os.symlink(self.other, os.path.join(first, "tool"))
        allow_list = AllowList([self.tool], search_path=first + os.pathsep + self.bin)
        self.assertRPCError(COMMAND_NOT_ALLOWED, allow_list.resolve, "tool", self.work)

    def test_symlink_to_allowed_program(self):
        """A link to an allowed program is allowed, as that program."""
        link = os.path.join(self.work, "alias")
        os.symlink(self.tool, link)
        self.assertEqual(self.allow("tool").resolve(link, "/"), self.tool)

    def test_allowed_symlink_means_its_target(self):
        """Allowing a link allows the program it leads to, not the name."""
        os.symlink(self.other, os.path.join(self.bin, "linked"))
        allow_list = self.allow("linked")
        self.assertEqual(allow_list.resolve("other", self.work), self.other)
        self.assertRPCError(COMMAND_NOT_ALLOWED, allow_list.resolve, "tool", self.work)

    def test_not_allowed(self):
        """A program on the path but not allowed is refused, saying how to allow it."""
        message = self.assertRPCError(
            COMMAND_NOT_ALLOWED, self.allow("tool").resolve, "other", self.work
        )
        self.assertIn("'other'", message)
        self.assertIn("not on the allow-list", message)
        self.assertIn("--allow other", message)
        self.assertNotIn("nothing is allowed by default", message)

    def test_unknown(self):
        """A program that does not exist is refused the same way."""
        message = self.assertRPCError(
            COMMAND_NOT_ALLOWED, self.allow("tool").resolve, "nosuch", self.work
        )
        self.assertIn("--allow nosuch", message)

    def test_not_executable(self):
        """A file that is not executable is refused."""
        self.assertRPCError(
            COMMAND_NOT_ALLOWED, self.allow("tool").resolve, self.data, self.work
        )

    def test_nothing_by_default(self):
        """An empty allow-list allows nothing and says so."""
        allow_list = self.allow()
        self.assertEqual(len(allow_list), 0)
        message = self.assertRPCError(
            COMMAND_NOT_ALLOWED, allow_list.resolve, "tool", self.work
        )
        self.assertIn("nothing is allowed by default", message)
        self.assertRPCError(COMMAND_NOT_ALLOWED, allow_list.resolve, SHELL, self.work)

    def test_shell_hint(self):
        """Refusing /bin/sh says to allow sh."""
        message = self.assertRPCError(
            COMMAND_NOT_ALLOWED, self.allow("tool").resolve, SHELL, self.work
        )
        self.assertIn("--allow sh", message)

    def test_nul(self):
        """A program name with a NUL byte is invalid params."""
        self.assertRPCError(INVALID_PARAMS, self.allow("tool").resolve, "to\0ol", "/")

    def test_empty(self):
        """An empty program name is invalid params."""
        self.assertRPCError(INVALID_PARAMS, self.allow("tool").resolve, "", "/")

    def test_unknown_entry(self):
        """Allowing a program that cannot be found is an error naming it."""
        error = self.assertRaises(AllowListError, self.allow, "tool", "nosuch")
        self.assertIn("--allow nosuch", str(error))
        self.assertIn(self.bin, str(error))

    def test_non_executable_entry(self):
        """Allowing a file that is not executable is an error."""
        self.assertRaises(AllowListError, self.allow, self.data)

    def test_directory_entry(self):
        """Allowing a directory is an error."""
        self.assertRaises(AllowListError, self.allow, self.work)


class BuildCommandTests(ProgramsMixin, SynchronousTestCase):
    """
    Tests for L{build_command}.
    """

    def setUp(self):
        super().setUp()
        self.allow_list = self.allow("tool")
        self.base_env = {"PATH": "/usr/bin", "HOME": "/home/ccx"}

    def build(self, command, **kwargs):
        kwargs.setdefault("default_cwd", self.work)
        kwargs.setdefault("base_env", self.base_env)
        return build_command(self.allow_list, command, **kwargs)

    def assertInvalid(self, command, **kwargs):
        return self.assertRPCError(INVALID_PARAMS, self.build, command, **kwargs)

    def test_list(self):
        """An array is the argv, with the real path of its program."""
        command = self.build(["tool", "-v", "a b"])
        self.assertEqual(
            command,
            Command(self.tool, ["tool", "-v", "a b"], self.work, self.base_env, False),
        )

    def test_string_split(self):
        """A string is split into words like a POSIX shell would."""
        command = self.build("tool 'a b' \"c d\" e\\ f  $HOME")
        self.assertEqual(command.argv, ["tool", "a b", "c d", "e f", "$HOME"])
        self.assertEqual(command.executable, self.tool)

    def test_unbalanced_quotes(self):
        """A string with unbalanced quotes is invalid params."""
        message = self.assertInvalid("tool 'a b")
        self.assertIn("cannot split", message)

    def test_empty(self):
        """An empty command is invalid params."""
        for command in ("", "   ", []):
            message = self.assertInvalid(command)
            self.assertIn("'command' is empty", message)

    def test_wrong_types(self):
        """A command that is neither a string nor strings is invalid params."""
        for command in (["tool", 1], {"argv": ["tool"]}, 5, None):
            self.assertInvalid(command)

    def test_nul(self):
        """A NUL byte in any word is invalid params."""
        self.assertIn("NUL", self.assertInvalid(["tool", "a\0b"]))
        self.assertInvalid(["to\0ol"])

    def test_not_allowed(self):
        """A program not on the allow-list is refused with -32002."""
        message = self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, ["other"])
        self.assertIn("--allow other", message)

    def test_argv0_kept(self):
        """The program's word is kept as the client wrote it."""
        command = self.build([self.tool, "x"])
        self.assertEqual(command.argv, [self.tool, "x"])
        command = self.build(["bin/tool"], default_cwd=self.base)
        self.assertEqual(command.argv[0], "bin/tool")
        self.assertEqual(command.executable, self.tool)

    def test_shell_not_allowed(self):
        """shell: true needs sh on the allow-list."""
        message = self.assertRPCError(
            COMMAND_NOT_ALLOWED, self.build, "tool | tool", shell=True
        )
        self.assertIn("--allow sh", message)

    def test_shell(self):
        """With sh allowed, shell: true runs the string with sh -c."""
        self.allow_list = AllowList(["tool", SHELL], search_path=self.bin)
        command = self.build("tool 'x' | tool", shell=True)
        self.assertEqual(command.argv, ["sh", "-c", "tool 'x' | tool"])
        self.assertEqual(command.executable, os.path.realpath(SHELL))

    def test_shell_needs_string(self):
        """With shell: true, the command must be one string."""
        self.allow_list = AllowList([SHELL], search_path=self.bin)
        message = self.assertInvalid(["tool", "x"], shell=True)
        self.assertIn("one string", message)

    def test_shell_nul(self):
        """A NUL byte in a shell command is invalid params too."""
        self.allow_list = AllowList([SHELL], search_path=self.bin)
        self.assertInvalid("tool a\0b", shell=True)

    def test_cwd_default(self):
        """Without cwd, the default directory is used."""
        self.assertEqual(self.build(["tool"]).cwd, self.work)

    def test_cwd_relative(self):
        """A relative cwd is taken from the default directory."""
        self.assertEqual(self.build(["tool"], cwd="../bin").cwd, self.bin)

    def test_cwd_absolute(self):
        """An absolute cwd is used as it is."""
        self.assertEqual(self.build(["tool"], cwd=self.base).cwd, self.base)

    def test_relative_program_uses_cwd(self):
        """A relative program path is resolved against the command's cwd."""
        command = self.build(["./tool"], cwd=self.bin)
        self.assertEqual((command.executable, command.cwd), (self.tool, self.bin))
        self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, ["./tool"])

    def test_cwd_missing(self):
        """A cwd that does not exist is invalid params, naming it."""
        message = self.assertInvalid(["tool"], cwd="nosuch")
        self.assertIn("'nosuch' is not an existing directory", message)

    def test_cwd_file(self):
        """A cwd that is a file is invalid params."""
        self.assertInvalid(["tool"], cwd=self.tool)

    def test_cwd_nul(self):
        """A cwd with a NUL byte is invalid params."""
        self.assertInvalid(["tool"], cwd="a\0b")

    def test_env_merged(self):
        """env is added to the base environment, overriding it."""
        command = self.build(
            ["tool"], env={"HOME": "/tmp", "LANG": "C"}, allow_env=("HOME", "LANG")
        )
        self.assertEqual(
            command.env, {"PATH": "/usr/bin", "HOME": "/tmp", "LANG": "C"}
        )
        self.assertEqual(self.base_env, {"PATH": "/usr/bin", "HOME": "/home/ccx"})

    def test_env_empty_value(self):
        """An empty value is a valid variable."""
        command = self.build(["tool"], env={"EMPTY": ""}, allow_env=("EMPTY",))
        self.assertEqual(command.env["EMPTY"], "")

    def test_env_base_default(self):
        """
        Without a base environment, programs start from the documented base
        environment on the allow-list's search path, never from the
        service's own environment.
        """
        self.patch(os, "environ", dict(os.environ, TERM="xterm", TMUX="/tmp/tmux-0/default"))
        command = build_command(
            self.allow_list, ["tool"], env={"CCX_TEST": "1"}, allow_env=("CCX_TEST",)
        )
        self.assertEqual(
            command.env,
            {"PATH": self.bin, "LANG": "C.UTF-8", "TERM": "dumb", "CCX_TEST": "1"},
        )

    def test_env_invalid(self):
        """Names that are empty, hold '=' or NUL, and values with NUL are refused."""
        for env in ({"": "x"}, {"A=B": "x"}, {"A\0": "x"}, {"A": "x\0y"}):
            message = self.assertInvalid(["tool"], env=env)
            self.assertIn("'env' entry", message)

    def test_stdin(self):
        """The stdin flag is carried."""
        self.assertFalse(self.build(["tool"]).stdin)
        self.assertTrue(self.build(["tool"], stdin=True).stdin)

    def test_checks_before_allow_list(self):
        """A malformed command is invalid params even if not allowed."""
        self.assertInvalid(["other", "a\0"])
        self.assertInvalid("other 'x")


class ProgramNameTests(ProgramsMixin, SynchronousTestCase):
    """
    A program runs only under a name it was allowed under: multi-call
    programs (busybox, pgrep/pkill, bash/rbash, vim/view, xz/xzcat) choose
    what they do by the last component of their C{argv[0]}.
    """

    def setUp(self):
        super().setUp()
        self.pgrep = self.program("pgrep")
        self.pkill = os.path.join(self.bin, "pkill")
        os.symlink("pgrep", self.pkill)

    def build(self, command, allowed=("pgrep",), **kwargs):
        kwargs.setdefault("default_cwd", self.work)
        kwargs.setdefault("base_env", {})
        return build_command(self.allow(*allowed), command, **kwargs)

    def test_allowed_name_runs(self):
        """The name it was allowed under runs, argv[0] as the client wrote it."""
        command = self.build(["pgrep", "x"])
        self.assertEqual((command.executable, command.argv), (self.pgrep, ["pgrep", "x"]))

    def test_link_under_another_name_refused(self):
        """With pgrep allowed, pkill (a link to pgrep) is refused, saying how to allow it."""
        message = self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, ["pkill", "x"])
        self.assertIn("'pkill' runs " + self.pgrep, message)
        self.assertIn("allowed only under the name 'pgrep'", message)
        self.assertIn("--allow pkill", message)
        self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, [self.pkill])

    def test_link_elsewhere_under_another_name_refused(self):
        """A link a client made, under another name, to an allowed program is refused."""
        link = os.path.join(self.work, "pkill")
        os.symlink(self.pgrep, link)
        self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, [link])
        self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, ["./pkill"])

    def test_link_elsewhere_under_the_allowed_name(self):
        """Only the last component counts: a link named like the allowed name runs."""
        link = os.path.join(self.work, "pgrep")
        os.symlink(self.pgrep, link)
        self.assertEqual(self.build([link]).argv, [link])

    def test_hard_link_under_another_name_refused(self):
        """A hard link is another file: refused by its path, whatever its name."""
        os.link(self.pgrep, os.path.join(self.bin, "pkill2"))
        self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, ["pkill2"])

    def test_both_names_allowed(self):
        """Allowing both names of one program allows both."""
        for name in ("pgrep", "pkill"):
            command = self.build([name], allowed=("pgrep", "pkill"))
            self.assertEqual((command.executable, command.argv), (self.pgrep, [name]))

    def test_allowed_by_path_means_its_name(self):
        """Allowed by absolute path, the program runs under that path's last component."""
        self.assertEqual(self.build(["pgrep"], allowed=(self.pgrep,)).executable, self.pgrep)
        self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, ["pkill"], allowed=(self.pgrep,))

    def test_allowed_link_does_not_allow_its_target_name(self):
        """With view (a link to vim) allowed, vim itself is refused: view is not vim."""
        vim = self.program("vim")
        os.symlink("vim", os.path.join(self.bin, "view"))
        self.assertEqual(self.build(["view"], allowed=("view",)).executable, vim)
        self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, ["vim"], allowed=("view",))
        self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, [vim], allowed=("view",))

    def test_restricted_shell_is_not_the_shell(self):
        """With rbash (a link to bash) allowed, bash is refused."""
        os.symlink("tool", os.path.join(self.bin, "rbash"))
        self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, ["tool"], allowed=("rbash",))
        self.assertEqual(self.build(["rbash"], allowed=("rbash",)).executable, self.tool)

    def test_login_name_refused(self):
        """'-tool' (how a login shell is named) is a name of its own."""
        os.symlink(self.tool, os.path.join(self.work, "-tool"))
        self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, ["./-tool"], allowed=("tool",))

    def test_shell_needs_the_name_sh(self):
        """shell: true runs /bin/sh as sh: allowing the shell under another name does not do."""
        real = os.path.realpath(SHELL)
        message = self.assertRPCError(
            COMMAND_NOT_ALLOWED, self.build, "true", shell=True, allowed=(real,)
        )
        self.assertIn("--allow sh", message)
        self.assertEqual(self.build("true", shell=True, allowed=(SHELL,)).executable, real)


class SameNameElsewhereTests(ProgramsMixin, SynchronousTestCase):
    """
    A program is allowed by its real path: a different executable that
    merely has an allowed program's name is refused.
    """

    def setUp(self):
        super().setUp()
        self.impostor = self.program("tool", directory=self.work)

    def test_given_as_a_path(self):
        """An executable named like an allowed one, in another directory, given as a path."""
        allow_list = self.allow("tool")
        for word, cwd in ((self.impostor, "/"), ("./tool", self.work)):
            message = self.assertRPCError(COMMAND_NOT_ALLOWED, allow_list.resolve, word, cwd)
            self.assertIn("not on the allow-list", message)
        command = self.assertRaises(
            ProcessError, build_command, allow_list, [self.impostor], default_cwd=self.work
        )
        self.assertEqual(rpc_error(command).code, COMMAND_NOT_ALLOWED)

    def test_found_first_on_path(self):
        """An executable named like an allowed one, found first on the search path."""
        allow_list = AllowList([self.tool], search_path=self.work + os.pathsep + self.bin)
        message = self.assertRPCError(COMMAND_NOT_ALLOWED, allow_list.resolve, "tool", "/")
        self.assertIn(self.impostor, message)
        self.assertEqual(allow_list.resolve(self.tool, "/"), self.tool)


class EnvironmentTests(ProgramsMixin, SynchronousTestCase):
    """
    A client sets only the variables the service allows, never a denied
    one; programs start from the base environment.
    """

    def setUp(self):
        super().setUp()
        self.allow_list = self.allow("tool")

    def build(self, env, allow_env=(), deny_env=DEFAULT_DENY_ENV, base_env=None):
        return build_command(
            self.allow_list, ["tool"], env=env, default_cwd=self.work,
            base_env={} if base_env is None else base_env,
            allow_env=allow_env, deny_env=deny_env,
        )

    def test_nothing_allowed_by_default(self):
        """With no --allow-env, any variable is refused with -32002 naming --allow-env NAME."""
        message = self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, {"GREETING": "hi"})
        self.assertIn("'GREETING'", message)
        self.assertIn("start ccx with --allow-env GREETING to allow it", message)
        self.assertIn("nothing is allowed by default", message)

    def test_allowed_name(self):
        """An allowed name is set; another name, just beside it, is refused."""
        self.assertEqual(self.build({"GREETING": "hi"}, ("GREETING",)).env, {"GREETING": "hi"})
        for name in ("GREETINGS", "GREETIN", "greeting"):
            message = self.assertRPCError(
                COMMAND_NOT_ALLOWED, self.build, {name: "hi"}, ("GREETING",)
            )
            self.assertIn(f"--allow-env {name}", message)
            self.assertNotIn("nothing is allowed by default", message)

    def test_allowed_pattern(self):
        """A pattern allows the names it matches, case and all."""
        self.assertEqual(self.build({"APP_X": "1"}, ("APP_*",)).env, {"APP_X": "1"})
        for name in ("APP", "app_x", "XAPP_X"):
            self.assertRPCError(COMMAND_NOT_ALLOWED, self.build, {name: "1"}, ("APP_*",))

    def test_denied_even_when_allowed(self):
        """The deny list holds on top of the allow-list: '*' still refuses what changes the code run."""
        for name in (
            "BASH_FUNC_greet%%", "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0",
            "GIT_CONFIG_PARAMETERS", "PATH", "PERLLIB", "NODE_PATH", "_JAVA_OPTIONS",
            "LD_PRELOAD", "BASH_ENV", "PYTHONPATH", "HOME",
        ):
            error = self.assertRaises(ProcessError, self.build, {name: "x"}, ("*",))
            self.assertEqual(error.setting, "deny_env", name)
            message = rpc_error(error).message
            self.assertIn(repr(name), message)
            self.assertIn("(see --deny-env)", message)
        for name in ("GIT_AUTHOR_NAME", "BASH_FUNC", "PATHS", "LANG"):
            self.assertEqual(self.build({name: "x"}, ("*",)).env, {name: "x"})

    def test_client_overrides_the_base(self):
        """An allowed variable overrides the base environment's."""
        env = self.build({"LANG": "C"}, ("LANG",), base_env={"PATH": "/bin", "LANG": "C.UTF-8"}).env
        self.assertEqual(env, {"PATH": "/bin", "LANG": "C"})

    def test_base_environment(self):
        """PATH is the search path, then LANG and TERM; nothing of the service's environment leaks."""
        environ = {"TERM": "xterm-256color", "TMUX": "/tmp/tmux", "HOME": "/root", "SECRET": "s"}
        self.assertEqual(
            base_environment("/usr/bin:/bin", environ=environ),
            {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "dumb"},
        )

    def test_pass_env(self):
        """--pass-env hands the service's variables on; one the service lacks is left out."""
        environ = {"HOME": "/home/ccx", "API_KEY": "k", "TERM": "xterm"}
        self.assertEqual(
            base_environment("/bin", ["HOME", "API_KEY", "MISSING", "TERM"], environ),
            {"PATH": "/bin", "LANG": "C.UTF-8", "TERM": "xterm", "HOME": "/home/ccx", "API_KEY": "k"},
        )

    def test_empty_search_path(self):
        """With no search path, PATH is the system default."""
        self.assertEqual(base_environment("", environ={})["PATH"], os.defpath)
