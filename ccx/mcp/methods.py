"""
The MCP method table, served by L{ccx.rpc.jsonrpc.Dispatcher} like the
native one: the lifecycle (C{initialize}, C{notifications/initialized},
C{ping}), C{tools/list}, C{tools/call}, C{logging/setLevel} and
C{notifications/cancelled}.  It knows nothing of the transport: what a call
sends while it runs goes to the I{channel} it is given (the WebSocket, or
the HTTP request's SSE stream).
"""

import os
from typing import Any, Dict, Optional, Tuple

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ccx.mcp.envelope import (
    MISSING_CAPABILITY,
    SERVER_INFO_KEY,
    STATELESS_VERSIONS,
    envelope_of,
    requested_version,
)
from ccx.mcp.progress import ProgressToken
from ccx.mcp.tasks import RELATED_TASK_KEY, task_fields, task_status
from ccx.mcp.session import LOG_LEVELS, McpSession, at_least, negotiate
from ccx.mcp.tools import Answer, ToolCall, Tools
from ccx.native.methods import NativeMethods
from ccx.node import Node
from ccx.process.managed import ManagedProcess
from ccx.rpc.errors import INVALID_REQUEST, METHOD_NOT_FOUND, RPCError, invalid_params
from ccx.rpc.interfaces import INotificationChannel
from ccx.rpc.jsonrpc import Call, Handler
from ccx.session import Session

# The WebSocket subprotocol that selects MCP (the one the MCP Python SDK's
# WebSocket client asks for).
MCP_SUBPROTOCOL = "mcp"
SERVER_NAME = "ccx"
# The extension that makes a tool call a task in the stateless era.
TASKS_EXTENSION = "io.modelcontextprotocol/tasks"


def _progress_token(params: Dict[str, Any]) -> Optional[ProgressToken]:
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        return None
    token = meta.get("progressToken")
    if isinstance(token, bool) or not isinstance(token, (str, int)):
        return None
    return token


class McpMethods:
    """
    The MCP methods of one session, answering on one channel.

    @param channel: where notifications caused by these calls go.
    """

    log = Logger()

    def __init__(
        self, node: Node, mcp: McpSession, tools: Tools, channel: INotificationChannel
    ) -> None:
        self._node = node
        self._mcp = mcp
        self._tools = tools
        self._channel = channel

    def table(self) -> Dict[str, Handler]:
        return {
            "initialize": self.initialize,
            "notifications/initialized": self.initialized,
            "ping": self.ping,
            "server/discover": self._stateless("discover"),
            "tools/list": self._either("tools_list"),
            "tools/call": self._either("tools_call"),
            "logging/setLevel": self.set_level,
            "notifications/cancelled": self.cancelled,
            "tasks/get": self._either("tasks_get"),
            "tasks/cancel": self._either("tasks_cancel"),
            "tasks/update": self._stateless("tasks_update"),
            "tasks/result": self._handshake("tasks_result"),
            "tasks/list": self._handshake("tasks_list"),
        }

    def _handshake(self, name: str) -> Handler:
        """
        A method only the handshake era has (after initialize, at 2025-11-25).
        """

        def run(params: Any, call: Call) -> Any:
            self._check_initialized(call.method)
            if not at_least(self._mcp.protocol_version, "2025-11-25"):
                raise RPCError(
                    METHOD_NOT_FOUND,
                    f"method not found: {call.method} came with protocol version 2025-11-25",
                )
            return getattr(self, name)(params, call)

        return run

    # -- the two eras ----------------------------------------------------------

    def _either(self, name: str) -> Handler:
        """
        A method of both eras: with an envelope in its C{_meta}, a
        stateless-era request answered on its own (L{_stateless}); without
        one, a request of the session its C{initialize} opened.
        """
        stateless = self._stateless(name)

        def run(params: Any, call: Call) -> Any:
            if requested_version(params) is not None:
                return stateless(params, call)
            self._check_initialized(call.method)
            return getattr(self, name)(params, call)

        return run

    def _stateless(self, name: str) -> Handler:
        """
        A stateless-era method: read the request's envelope, answer it with
        what the envelope says (nothing carried over from other requests),
        and stamp the result with its C{resultType} and the server's info.
        """

        def run(params: Any, call: Call) -> Deferred:
            envelope = envelope_of(params, call.method)
            view = self._mcp.for_request(
                envelope.version, envelope.capabilities, envelope.client_info, envelope.log_level
            )
            methods = McpMethods(self._node, view, Tools(self._node, view), self._channel)
            d = maybeDeferred(getattr(methods, name), params, call)
            return d.addCallback(self._stamp)

        return run

    def _server_info(self) -> Dict[str, Any]:
        return {
            "name": SERVER_NAME,
            "title": "ccx: run and steer programs",
            "version": self._node.version,
        }

    def _stamp(self, result: Any) -> Any:
        if isinstance(result, dict):
            result.setdefault("resultType", "complete")
            meta = result.setdefault("_meta", {})
            meta[SERVER_INFO_KEY] = self._server_info()
        return result

    def _capabilities(self) -> Dict[str, Any]:
        capabilities: Dict[str, Any] = {"tools": {"listChanged": False}, "logging": {}}
        if self._mcp.stateless:
            capabilities["extensions"] = {TASKS_EXTENSION: {}}
        elif at_least(self._mcp.protocol_version, "2025-11-25"):
            capabilities["tasks"] = {
                "list": {},
                "cancel": {},
                "requests": {"tools": {"call": {}}},
            }
        return capabilities

    def discover(self, params: Any, call: Call) -> Dict[str, Any]:
        """
        C{server/discover}: the versions ccx speaks without a handshake, its
        capabilities and its instructions.
        """
        self.log.info(
            "MCP: {client} {client_version} discovered ccx at {version}",
            client=self._mcp.client_info.get("name"),
            client_version=self._mcp.client_info.get("version"),
            version=self._mcp.protocol_version,
        )
        return {
            "supportedVersions": list(STATELESS_VERSIONS),
            "capabilities": self._capabilities(),
            "instructions": self._instructions(),
            "cacheScope": "private",
            "ttlMs": 0,
        }

    def _check_initialized(self, method: str) -> None:
        if self._mcp.protocol_version is None:
            raise RPCError(
                INVALID_REQUEST,
                f"invalid request: {method} before initialize; start the session "
                "with an initialize request",
            )

    def _instructions(self) -> str:
        names = sorted({os.path.basename(p) for p in self._node.config.allow})
        allowed = (
            "The programs allowed are: " + ", ".join(names) + "."
            if names
            else "No program is allowed yet (the operator allows them with --allow)."
        )
        return (
            "ccx runs programs on its host and steers them. Use execute to run one to "
            "completion, or start for a long-running one and then status, output, "
            "write, pause, resume and cancel. Commands run without a shell unless "
            f"shell is true and sh is allowed. {allowed}"
        )

    def initialize(self, params: Any, call: Call) -> Dict[str, Any]:
        if self._mcp.protocol_version is not None:
            raise RPCError(
                INVALID_REQUEST, "invalid request: this session is already initialized"
            )
        if not isinstance(params, dict) or not isinstance(
            params.get("protocolVersion"), str
        ):
            raise invalid_params(
                "invalid params: initialize needs 'protocolVersion' (a string), "
                "'capabilities' and 'clientInfo'"
            )
        version = negotiate(params["protocolVersion"])
        client = params.get("clientInfo")
        self._mcp.client_info = client if isinstance(client, dict) else {}
        self._mcp.protocol_version = version
        self.log.info(
            "MCP session {session_id}: {client} {client_version} asked for "
            "{requested}, speaking {version}",
            session_id=self._mcp.session_id,
            client=self._mcp.client_info.get("name"),
            client_version=self._mcp.client_info.get("version"),
            requested=params["protocolVersion"],
            version=version,
        )
        server: Dict[str, Any] = {"name": SERVER_NAME, "version": self._node.version}
        if at_least(version, "2025-06-18"):
            server["title"] = "ccx: run and steer programs"
        return {
            "protocolVersion": version,
            "capabilities": self._capabilities(),
            "serverInfo": server,
            "instructions": self._instructions(),
        }

    def initialized(self, params: Any, call: Call) -> None:
        self._mcp.initialized = True

    def ping(self, params: Any, call: Call) -> Dict[str, Any]:
        return {}

    def tools_list(self, params: Any, call: Call) -> Dict[str, Any]:
        version = self._mcp.protocol_version
        result: Dict[str, Any] = {
            "tools": [tool.describe(version) for tool in self._tools.by_name.values()]
        }
        if self._mcp.stateless:
            # What the allow-list lets run does not change while ccx runs,
            # but a cache should not outlive it.
            result.update(cacheScope="private", ttlMs=0)
        return result

    def tools_call(self, params: Any, call: Call) -> Deferred:
        if not isinstance(params, dict) or not isinstance(params.get("name"), str):
            raise invalid_params("invalid params: tools/call needs the tool's 'name'")
        name = params["name"]
        tool = self._tools.by_name.get(name)
        if tool is None:
            raise invalid_params(
                f"invalid params: unknown tool {name!r} (tools: "
                + ", ".join(self._tools.by_name)
                + ")"
            )
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise invalid_params("invalid params: tools/call's 'arguments' must be an object")
        context = ToolCall(self._mcp, call, self._channel, _progress_token(params))
        if self._as_task(name, params):
            d = maybeDeferred(self._tools.execute_task, arguments, context)
            return d.addCallbacks(self._task_created, self._tool_error, errbackArgs=(name,))
        end = None
        if not call.is_notification:
            end = self._mcp.begin(call.request_id, context.cancel)
        d = maybeDeferred(tool.handler, arguments, context)
        d.addCallbacks(self._tool_result, self._tool_error, errbackArgs=(name,))
        if end is not None:

            def finished(result: Any) -> Any:
                end()
                return result

            d.addBoth(finished)
        return d

    def _tool_result(self, answer: Answer) -> Dict[str, Any]:
        result: Dict[str, Any] = {
            "content": [{"type": "text", "text": answer.text}],
            "isError": False,
        }
        if at_least(self._mcp.protocol_version, "2025-06-18"):
            result["structuredContent"] = answer.structured
        return result

    def _tool_error(self, failure: Failure, name: str) -> Any:
        message = self._tools.explain(failure)
        if message is None:
            return failure
        self.log.info(
            "MCP session {session_id}: tool {tool} failed: {error}",
            session_id=self._mcp.session_id,
            tool=name,
            error=message,
        )
        return {"content": [{"type": "text", "text": message}], "isError": True}

    # -- tasks ------------------------------------------------------------------

    def _declares_tasks(self) -> bool:
        extensions = self._mcp.capabilities.get("extensions")
        return isinstance(extensions, dict) and TASKS_EXTENSION in extensions

    def _as_task(self, tool: str, params: Dict[str, Any]) -> bool:
        """
        Whether a tools/call becomes a task: an C{execute} whose client
        declared the tasks extension (stateless era: ccx then always makes
        one), or that asked with C{params.task} (2025-11-25).
        """
        tool_supports = self._tools.by_name[tool].task_support is not None
        if self._mcp.stateless:
            return tool_supports and self._declares_tasks()
        if "task" not in params or self._mcp.protocol_version != "2025-11-25":
            return False
        if not isinstance(params["task"], dict):
            raise invalid_params("invalid params: tools/call's 'task' must be an object")
        if not tool_supports:
            raise invalid_params(f"invalid params: the tool {tool!r} does not run as a task")
        return True

    def _task(self, process: ManagedProcess) -> Dict[str, Any]:
        return task_fields(process, self._node.config.keep_finished, self._mcp.stateless)

    def _task_created(self, process: ManagedProcess) -> Dict[str, Any]:
        if self._mcp.stateless:
            return dict(self._task(process), resultType="task")
        return {"task": self._task(process)}

    def _task_process(self, params: Any, call: Call) -> ManagedProcess:
        if self._mcp.stateless and not self._declares_tasks():
            raise RPCError(
                MISSING_CAPABILITY,
                f"missing required client capability: {call.method} needs the "
                f"{TASKS_EXTENSION} extension in the request's clientCapabilities",
                {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}},
            )
        task_id = params.get("taskId") if isinstance(params, dict) else None
        if not isinstance(task_id, str):
            raise invalid_params(f"invalid params: {call.method} needs 'taskId' (a string)")
        process = self._node.registry.find(task_id)
        if process is None:
            raise invalid_params(
                f"invalid params: no task {task_id!r}: a task is a ccx process, kept "
                f"{self._node.config.keep_finished:g} s after it ends (see the list tool)"
            )
        return process

    def tasks_get(self, params: Any, call: Call) -> Dict[str, Any]:
        process = self._task_process(params, call)
        task = self._task(process)
        if self._mcp.stateless and task["status"] == "completed":
            task["result"] = self._tool_result(self._tools.run_answer(process))
        return task

    def tasks_cancel(self, params: Any, call: Call) -> Dict[str, Any]:
        """
        Cancel the task's program and everything it started.
        """
        process = self._task_process(params, call)
        if process.output.completion is not None:
            if self._mcp.stateless:
                return {}
            raise invalid_params(
                f"invalid params: task {process.process_id!r} has already ended "
                f"({task_status(process)}): there is nothing to cancel"
            )
        process.cancel()
        return {} if self._mcp.stateless else self._task(process)

    def tasks_update(self, params: Any, call: Call) -> Dict[str, Any]:
        # ccx's tasks never ask for input: an update has nothing to answer.
        self._task_process(params, call)
        return {}

    def tasks_list(self, params: Any, call: Call) -> Dict[str, Any]:
        return {"tasks": [self._task(p) for p in self._node.registry.all()]}

    def tasks_result(self, params: Any, call: Call) -> Deferred:
        """
        The task's result once it has ended: what C{execute} would have
        answered, marked with its task.
        """
        process = self._task_process(params, call)
        ended: Deferred = Deferred()
        if process.finished:
            ended.callback(None)
        else:
            process.ended.addBoth(lambda result: ended.callback(None) or result)

        def result(_: object) -> Dict[str, Any]:
            answer = self._tool_result(self._tools.run_answer(process))
            answer["_meta"] = {RELATED_TASK_KEY: {"taskId": process.process_id}}
            return answer

        return ended.addCallback(result)

    def set_level(self, params: Any, call: Call) -> Dict[str, Any]:
        self._check_initialized("logging/setLevel")
        level = params.get("level") if isinstance(params, dict) else None
        if level not in LOG_LEVELS:
            raise invalid_params(
                "invalid params: logging/setLevel's 'level' must be one of "
                + ", ".join(LOG_LEVELS)
            )
        self._mcp.log_level = level
        return {}

    def cancelled(self, params: Any, call: Call) -> None:
        if not isinstance(params, dict) or "requestId" not in params:
            return
        if self._mcp.cancel(params["requestId"]):
            self.log.info(
                "MCP session {session_id}: request {request_id} cancelled ({reason})",
                session_id=self._mcp.session_id,
                request_id=params["requestId"],
                reason=params.get("reason") or "no reason given",
            )


def websocket_methods(
    node: Node, session: Session, connection: INotificationChannel
) -> Tuple[Dict[str, Handler], McpSession]:
    """
    The methods of a WebSocket that chose the C{mcp} subprotocol: MCP's,
    and the native ones beside them (a client that calls C{execute} or
    C{attach} gets the C{process.*} notifications it asked for; MCP tools
    send none).

    @return: the method table, and the MCP session to close with the connection.
    """
    mcp = McpSession(session, standalone=connection)
    table = NativeMethods(node, session, connection).table()
    table.update(McpMethods(node, mcp, Tools(node, mcp), connection).table())
    return table, mcp
