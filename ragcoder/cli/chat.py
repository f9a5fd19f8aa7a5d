"""The terminal chat: one function fed by a line-reading callback, so stdin drives it in tests.

Each message is an instruction, or a follow-up that refines the previous code ("now make it
handle negative numbers"). Slash commands manage the session. Ctrl-C cancels the current step,
not the session; Ctrl-D or /exit ends it. With a named session (``--session NAME``) the
conversation is saved after every change and picked up where it was left next time;
``/open FILE`` starts from an existing file and ``/write`` writes the result back to it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcoder.agent.loop import AgentEvent, CodeAgent
from ragcoder.agent.result import AgentResult
from ragcoder.agent.tasks import MAX_INSTRUCTION_CHARS, Task, check_instruction
from ragcoder.cli.chat_sessions import ChatSessionStore, FileCommands, show_resumed
from ragcoder.errors import TaskError

if TYPE_CHECKING:
    from rich.console import Console

HELP = """Type an instruction, or a follow-up to change the last code. Commands:
  /help             this help
  /reset            forget the current code, tests and instruction
  /save FILE        write the current code to FILE
  /open FILE        start from the code in FILE (follow-ups change it)
  /write [FILE]     write the current code back to the /open'ed file (or to FILE)
  /run [CODE]       run the current code (or CODE) in the chat's session: variables persist
  /reset-run        start the /run session over (a fresh namespace and an empty /work)
  /tests [SOURCE]   show the tests (and those the last answer ran), or set them (/tests - clears)
  /model [NAME]     show the model, or switch to another (known name, folder or .gguf)
  /index PATH...    add files or folders to the retrieval index
  /exit             leave (Ctrl-D works too)"""


@dataclass
class ChatState:
    instruction: str = ""  # the conversation's task so far, follow-ups included
    code: str = ""
    tests: str | None = None
    turns: list[AgentResult] = field(default_factory=list)  # this process's turns, in full
    inputs_note: str = ""  # names the --file inputs in the first instruction
    messages: list[str] = field(default_factory=list)  # what the user asked, resumed sessions included
    source_file: str = ""  # the /open'ed file, where /write writes back

    def to_dict(self) -> dict[str, Any]:
        """What a named session keeps between runs."""
        keep = ("instruction", "code", "tests", "messages", "source_file")
        return {name: getattr(self, name) for name in keep}

    def restore(self, saved: dict[str, Any]) -> None:
        """Take up a saved session (:meth:`to_dict`)."""
        self.instruction = str(saved.get("instruction") or "")
        self.code = str(saved.get("code") or "")
        self.tests = str(saved["tests"]) if saved.get("tests") else None
        self.messages = [str(m) for m in saved.get("messages") or []]
        self.source_file = str(saved.get("source_file") or "")


def follow_up_task(state: ChatState, message: str) -> Task:
    """A new instruction, or a change to the code we already have."""
    if not state.code:
        note = f"\n\n{state.inputs_note}" if state.inputs_note else ""
        return Task(id=f"turn{len(state.messages) + 1}", instruction=message + note, tests=state.tests)
    instruction = (
        f"{state.instruction}\n\nThe current code is:\n```python\n{state.code.strip()}\n```\n\n"
        f"Change it as follows, keeping everything else working: {message}"
    )
    return Task(id=f"turn{len(state.messages) + 1}", instruction=instruction, tests=state.tests)


class ChatCommands(FileCommands):
    """The slash commands; each returns False to end the session."""

    def __init__(
        self,
        agent: CodeAgent,
        state: ChatState,
        console: Console,
        switch_model: Callable[[str], str] | None,
        index_paths: Callable[[list[str]], str] | None,
    ) -> None:
        self.agent, self.state, self.console = agent, state, console
        self.switch_model, self.index_paths = switch_model, index_paths
        self.session: Any = None  # the /run session, opened on first use
        self.outputs_dir = Path("ragcoder-output")
        self.store: ChatSessionStore | None = None  # the named chat session, saved after each change

    def __call__(self, line: str) -> bool:
        name, _, rest = line.partition(" ")
        handler = getattr(self, "do_" + name[1:].replace("-", "_"), None)
        if handler is None:
            self.console.print(f"unknown command {name}; /help lists them", highlight=False)
            return True
        return handler(rest.strip()) is not False

    def do_help(self, _: str) -> None:
        self.console.print(HELP, highlight=False, markup=False)

    def do_exit(self, _: str) -> bool:
        return False

    do_quit = do_exit

    def do_reset(self, _: str) -> None:
        note = self.state.inputs_note
        self.state.__init__()  # type: ignore[misc]
        self.state.inputs_note = note
        self.do_reset_run("")
        self.saved()
        self.console.print("session reset", highlight=False)

    def do_reset_run(self, _: str) -> None:
        if self.session is not None:
            self.session.reset()

    def do_save(self, arg: str) -> None:
        if not arg:
            self.console.print("usage: /save FILE", highlight=False)
        elif not self.state.code:
            self.console.print("nothing to save yet", highlight=False)
        else:
            path = Path(shlex.split(arg)[0]).expanduser()
            path.write_text(self.state.code, encoding="utf-8")
            self.console.print(f"saved {len(self.state.code.splitlines())} lines to {path}", highlight=False)

    def do_run(self, arg: str) -> None:
        code = arg.replace("\\n", "\n") if arg else self.state.code
        if not code:
            self.console.print("no code yet", highlight=False)
            return
        from ragcoder.errors import SandboxError
        from ragcoder.sandbox.session import open_session

        try:
            self.session = self.session or open_session(self.agent.sandbox)
            result = self.session.run(code)
        except SandboxError:  # a sandbox that keeps no sessions: a fresh run
            result = self.agent.sandbox.run(code)
        show_output(self.console, result.stdout, result.failure_summary(), self.agent.sandbox.name)
        show_files(self.console, result, self.outputs_dir)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def do_tests(self, arg: str) -> None:
        if arg == "-":
            self.state.tests = None
            self.console.print("tests cleared", highlight=False)
            self.saved()
        elif arg:
            self.state.tests = arg.replace("\\n", "\n")
            self.console.print("tests set; they decide whether code passes", highlight=False)
            self.saved()
        else:
            self.console.print(
                self.state.tests or "no tests (examples in the instruction are used)", highlight=False
            )
            last = self.state.turns[-1] if self.state.turns else None
            for case in last.test_cases if last else []:  # what the last answer was checked against
                status = f" (dropped: {case.dropped})" if case.dropped else ""
                self.console.print(f"  [{case.origin}] {case.name}{status}", highlight=False, markup=False)

    def do_model(self, arg: str) -> None:
        if not arg or self.switch_model is None:
            self.console.print(
                f"model: {getattr(self.agent.model, 'model_id', type(self.agent.model).__name__)}",
                highlight=False,
            )
            return
        try:
            self.console.print(self.switch_model(arg), highlight=False)
        except Exception as exc:  # a bad name must not end the session
            hint = getattr(exc, "hint", "")
            self.console.print(f"[red]error:[/red] {exc}" + (f" ({hint})" if hint else ""), highlight=False)

    def do_index(self, arg: str) -> None:
        if not arg or self.index_paths is None:
            self.console.print("usage: /index PATH...", highlight=False)
            return
        self.console.print(self.index_paths(shlex.split(arg)), highlight=False)


def show_output(console: Console, stdout: str, failure: str, backend: str) -> None:
    console.rule(f"output ({backend} sandbox)")
    console.print(stdout.rstrip() or "(no output)", highlight=False, markup=False)
    if failure:
        console.print(f"[red]{failure}[/red]", highlight=False)
    console.rule()


def show_files(console: Console, result: Any, folder: Path) -> None:
    """'wrote hist.png (23 KB), saved to ragcoder-output/hist.png' for each file the run wrote."""
    from ragcoder.sandbox.files import save_outputs, skipped_lines

    lines = [f.describe() for f in save_outputs(result.files, folder)] + skipped_lines(result.files_skipped)
    for line in lines:
        console.print(line, highlight=False, markup=False)
    if result.missing:
        console.print(f"[yellow]{result.missing}[/yellow]", highlight=False)


def _diff(before: str, after: str) -> str:
    import difflib

    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), "previous attempt", "this attempt", lineterm="", n=1
    )
    return "\n".join(lines)


def render_event(console: Console, event: AgentEvent, previous_code: str = "") -> None:
    """Show each step as it happens: sources, code (with its diff against the attempt before),
    each run with the check it failed, and what the agent does next."""
    from rich.syntax import Syntax

    data: dict[str, Any] = event.data
    if event.kind == "retrieved" and data["sources"]:
        console.print("[dim]sources: " + "; ".join(data["sources"]) + "[/dim]", highlight=False)
    elif event.kind == "retrieved" and data.get("retrieval", "").startswith("skipped"):
        console.print(f"[dim]no docs: {data['retrieval'].removeprefix('skipped: ')}[/dim]", highlight=False)
    elif event.kind == "generated" and not data.get("first", True):
        console.print(f"[dim]candidate {data['candidate']} ({data['origin']})[/dim]", highlight=False)
    elif event.kind == "generated":
        console.print(f"[bold]attempt {event.attempt}[/bold] ({data['step']})", highlight=False)
        console.print(Syntax(data["code"].rstrip() or "# (no code)", "python"))
        if previous_code and data["code"].strip():
            changes = _diff(previous_code, data["code"])
            console.print(Syntax(changes, "diff") if changes else "[dim](same code as before)[/dim]")
    elif event.kind == "ran":
        report = data["report"]
        verdict = "[green]passed[/green]" if data["passed"] else "[red]failed[/red]"
        detail = (
            report.summary() if report is not None else (data["result"].failure_summary() or "ran cleanly")
        )
        console.print(f"{verdict}: {detail}", highlight=False)
        shown = data.get("first", True)  # other candidates get one line each
        for outcome in report.failed[:3] if report is not None and shown else []:  # the assert, got, expected
            console.print(f"  x {outcome.name}: {outcome.message}"[:600], highlight=False, markup=False)
        if data["result"].stdout.strip() and shown:
            console.print(data["result"].stdout.rstrip()[-2000:], highlight=False, markup=False)
    elif event.kind == "tests":
        console.print(
            f"[dim]{sum(t.origin == 'generated' for t in data['tests'])} own tests for "
            f"{data['function']}[/dim]",
            highlight=False,
        )
    elif event.kind == "selected" and not data["shown"]:  # the code shown so far was another candidate's
        console.print(
            f"chose candidate {data['winner'].candidate}: {data['selection'].reason}", highlight=False
        )
        console.print(Syntax(data["winner"].code.rstrip() or "# (no code)", "python"))
    elif event.kind == "repairing":
        console.print(
            f"[yellow]repairing: attempt {event.attempt} gets the code and the failures above[/yellow]",
            highlight=False,
        )


def run_live(
    agent: CodeAgent,
    task: Task,
    console: Console,
    on_token: Callable[[str], None] | None,
    streamed: dict[str, bool],
) -> AgentResult:
    """Run one task showing each step as it happens (tokens, code, runs, repairs); its result."""
    result, previous_code = None, ""
    for event in agent.events(task, on_token=on_token):
        if streamed["any"]:
            stop = streamed.get("stop")
            if callable(stop):
                stop()  # the streamed reply gives way to the highlighted code
            else:
                console.print()
            streamed["any"] = False
        render_event(console, event, previous_code)
        if event.kind == "generated" and event.data.get("first", True):  # the code shown in full
            previous_code = event.data["code"]
        if event.kind == "done":
            result = event.data["result"]
    assert result is not None
    return result


def token_printer(console: Console) -> tuple[Callable[[str], None], dict[str, Any]]:
    """``on_token`` for ``run_live``: the reply appears dimmed as it is generated; on a terminal
    it is then replaced by the highlighted code, so the code is shown once."""
    streamed: dict[str, Any] = {"any": False}  # a reply is on screen and must end before the next event
    if not console.is_terminal:

        def on_token(token: str) -> None:
            streamed["any"] = True
            console.print(token, end="", style="dim", highlight=False, markup=False, soft_wrap=True)

        return on_token, streamed

    from rich.live import Live
    from rich.text import Text

    text: list[str] = []
    live = Live(console=console, transient=True, auto_refresh=False, vertical_overflow="crop")

    def stop() -> None:
        live.stop()
        text.clear()

    def on_token(token: str) -> None:
        if not streamed["any"]:
            streamed["any"] = True
            live.start()
        text.append(token)
        tail = "".join(text).splitlines()[-max(console.height - 2, 3) :]  # the newest lines fit
        live.update(Text("\n".join(tail), style="dim"), refresh=True)

    streamed["stop"] = stop
    return on_token, streamed


def run_chat(
    agent: CodeAgent,
    read_line: Callable[[str], str | None],
    console: Console,
    *,
    switch_model: Callable[[str], str] | None = None,
    index_paths: Callable[[list[str]], str] | None = None,
    stream_tokens: bool = True,
    inputs_note: str = "",
    outputs_dir: Path | None = None,
    max_instruction_chars: int = MAX_INSTRUCTION_CHARS,
    session: ChatSessionStore | None = None,
) -> ChatState:
    """The chat loop. ``read_line(prompt)`` returns a line, or None at end of input.

    With ``stream_tokens`` the model's reply appears as it is generated (dimmed), then the code
    it contained is shown highlighted. With a ``session`` the state is resumed from it and saved
    to it after every change.
    """
    state = ChatState(inputs_note=inputs_note)
    saved = session.load() if session is not None else None
    if saved is not None:
        state.restore(saved)
        show_resumed(console, session.name, state.messages, state.source_file, state.code)
    on_token, streamed = token_printer(console)
    commands = ChatCommands(agent, state, console, switch_model, index_paths)
    commands.outputs_dir = outputs_dir or commands.outputs_dir
    commands.store = session
    try:
        _chat_loop(
            agent,
            read_line,
            console,
            state,
            commands,
            on_token if stream_tokens else None,
            streamed,
            max_instruction_chars,
        )
    finally:
        commands.close()
    console.print("bye", highlight=False)
    return state


def _chat_loop(
    agent: CodeAgent,
    read_line: Callable[[str], str | None],
    console: Console,
    state: ChatState,
    commands: ChatCommands,
    on_token: Callable[[str], None] | None,
    streamed: dict[str, bool],
    max_instruction_chars: int,
) -> None:
    console.print("ragcoder chat: type an instruction, /help for commands, /exit to leave.", highlight=False)
    while True:
        try:
            line = read_line("ragcoder> ")
        except KeyboardInterrupt:  # Ctrl-C at the prompt: clear the line, stay
            console.print("(Ctrl-D or /exit to leave)", highlight=False)
            continue
        if line is None:
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not commands(line):
                break
            continue
        try:  # a message too long (with the code it changes) is refused; the session goes on
            task = follow_up_task(state, line)
            check_instruction(task.instruction, max_instruction_chars)
        except TaskError as exc:
            console.print(f"error: {exc}", highlight=False, markup=False)
            continue
        try:
            result = run_live(agent, task, console, on_token, streamed)
        except KeyboardInterrupt:
            console.print("[yellow]cancelled[/yellow]", highlight=False)
            continue
        state.turns.append(result)
        state.messages.append(line)
        state.code = result.code
        state.instruction = line if not state.instruction else f"{state.instruction}\nThen: {line}"
        commands.saved()
        verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
        console.print(
            f"{verdict} ({result.check}, {result.repairs} repair(s), {result.total_ms / 1000:.1f}s)",
            highlight=False,
        )
        console.print(result.summary() + "".join(f"; {note}" for note in result.notes), highlight=False)
        if result.attempts:
            show_files(console, result.attempts[-1].result, commands.outputs_dir)
