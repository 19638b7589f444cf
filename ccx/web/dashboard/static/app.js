// The ccx dashboard: a client of the native WebSocket protocol
// (docs/protocol.md; docs/dashboard.md).  No framework, no build step.
'use strict';

(function () {
  // The styles xterm.js makes at run time (<style> elements) carry the
  // page's nonce, as its Content-Security-Policy requires: no inline style
  // without it, and no inline script at all.
  const NONCE = document.currentScript ? document.currentScript.nonce : '';
  const createElement = document.createElement;
  document.createElement = function (name, options) {
    const element = createElement.call(this, name, options);
    if (String(name).toLowerCase() === 'style' && NONCE) element.nonce = NONCE;
    return element;
  };

  // What the page keeps, so that its memory stays bounded under a flood.
  const PANE_CHARS = 256 * 1024;     // text shown in the output pane
  const PENDING_BYTES = 1024 * 1024; // output received, not yet shown
  const FRAME_BYTES = 16 * 1024;     // output shown per animation frame, at most
  const TAIL_BYTES = 64 * 1024;      // output replayed when a program is opened
  const READ_BYTES = 64 * 1024;      // output read per "earlier" step
  const MAX_DROPS = 100;             // drop ranges listed
  const LIST_EVERY_MS = 2000;        // counters (bytes, CPU) refreshed
  const STREAM_NAMES = {1: 'stdout', 2: 'stderr', 3: 'pty'};
  const TOKEN_KEY = 'ccx-token';

  const $ = (id) => document.getElementById(id);
  const state = {
    control: null, output: null, sockets: [], processes: new Map(),
    programs: [], view: null, tableQueued: false,
  };
  // For tests and the curious: the page's state, read-only in spirit.
  window.ccxDashboard = state;

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
  function setStatus(text) { $('status').textContent = text; }

  // -- access ---------------------------------------------------------------

  async function begin(message) {
    // /health names the version only to a request with the right token
    // (or when none is configured): the way to know whether to ask.
    const headers = token() ? {Authorization: 'Bearer ' + token()} : {};
    let health;
    try {
      health = await (await fetch('/health', {headers, cache: 'no-store'})).json();
    } catch (e) {
      setStatus('cannot reach ccx: ' + e.message);
      setTimeout(begin, 3000);
      return;
    }
    if (!('version' in health)) {
      askToken(token() ? 'That token is not the one ccx was given.' : (message || ''));
      return;
    }
    $('login').hidden = true;
    setStatus('ccx ' + health.version + ', connecting…');
    connect();
  }

  function askToken(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $('main').hidden = true;
    $('login').hidden = false;
    $('login-message').textContent = message;
    setStatus('a token is needed');
    $('token').focus();
  }

  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value);
    $('token').value = '';
    begin();
  });

  // -- the connections -----------------------------------------------------
  // Two WebSockets: "control" for the table, the buttons and the form,
  // "output" for the program shown.  Under a flood the output connection
  // holds megabytes in the sockets' buffers ahead of anything sent after
  // them; a click's reply on the other one is not queued behind them.

  function openSocket(name) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const query = token() ? '?token=' + encodeURIComponent(token()) : '';
    const ws = new WebSocket(scheme + '//' + location.host + '/ws' + query);
    ws.binaryType = 'arraybuffer';
    const socket = {name, ws, nextId: 0, calls: new Map()};
    ws.onmessage = (event) => {
      // The program's output is read on the output connection only (execute
      // subscribes the control connection until it detaches).
      if (typeof event.data === 'string') received(socket, JSON.parse(event.data));
      else if (socket === state.output) frame(event.data);
    };
    ws.onclose = (event) => {
      for (const [, pending] of socket.calls) pending.reject(new Error('connection closed'));
      socket.calls.clear();
      if (state[name] !== socket) return;
      state.control = state.output = null;
      for (const other of [state.sockets || []].flat()) other.ws.close();
      setStatus('disconnected (' + event.code + '); reconnecting…');
      setTimeout(() => begin(), 2000);
    };
    return new Promise((resolve) => { ws.onopen = () => resolve(socket); });
  }

  async function connect() {
    const [control, output] = await Promise.all([openSocket('control'), openSocket('output')]);
    state.sockets = [control, output];
    state.control = control;
    state.output = output;
    opened();
  }

  function callOn(socket, method, params) {
    return new Promise((resolve, reject) => {
      if (!socket || socket.ws.readyState !== WebSocket.OPEN) {
        reject(new Error('not connected'));
        return;
      }
      const id = ++socket.nextId;
      socket.calls.set(id, {resolve, reject});
      socket.ws.send(JSON.stringify({jsonrpc: '2.0', id, method, params: params || {}}));
    });
  }

  function call(method, params) { return callOn(state.control, method, params); }
  function outputCall(method, params) { return callOn(state.output, method, params); }

  async function opened() {
    $('main').hidden = false;
    const table = await call('watch');
    state.processes.clear();
    for (const entry of table.processes) state.processes.set(entry.process_id, entry);
    queueTable();
    const programs = await call('programs');
    fillPrograms(programs.programs);
    setStatus('connected');
    if (state.view) openView(state.view.id);
  }

  function received(socket, message) {
    if (Array.isArray(message)) { message.forEach((m) => received(socket, m)); return; }
    if ('id' in message && !('method' in message)) {
      const pending = socket.calls.get(message.id);
      if (!pending) return;
      socket.calls.delete(message.id);
      if (message.error) pending.reject(new Error(message.error.message));
      else pending.resolve(message.result);
      return;
    }
    const params = message.params || {};
    if (message.method.startsWith('process.') && socket !== state.output) return;
    switch (message.method) {
      case 'processes.changed':
        if (params.process) state.processes.set(params.process_id, params.process);
        else state.processes.delete(params.process_id);
        queueTable();
        if (state.view && state.view.id === params.process_id && params.process) {
          showState(params.process.state);
        }
        break;
      case 'process.output':  // text output, should a process not take frames
        if (state.view && params.process_id === state.view.id) {
          output(params.type, params.offset, new TextEncoder().encode(params.data));
        }
        break;
      case 'process.dropped':
        if (state.view && params.process_id === state.view.id) {
          dropped(params.type, params.offset, params.bytes, 'dropped by ccx');
        }
        break;
      // process.paused and process.resumed come on the output connection,
      // maybe late behind a flood: the state shown comes from the control
      // connection (the buttons' replies, processes.changed) instead.
      case 'process.completed':
        if (state.view && params.process_id === state.view.id) {
          showState('exited (' + params.status + ', exit ' + params.exit_code + ')');
        }
        break;
    }
  }

  // A binary output frame (docs/protocol.md section 8).
  function frame(buffer) {
    const view = state.view;
    const head = new DataView(buffer);
    if (head.getUint8(0) !== 1 || !view) return;
    const bytes = new Uint8Array(buffer, 8, 16);
    let id = '';
    for (const b of bytes) id += b.toString(16).padStart(2, '0');
    if (id !== view.id) return;
    const stream = STREAM_NAMES[head.getUint8(1)];
    output(stream, Number(head.getBigUint64(24)), new Uint8Array(buffer, 40));
  }

  // -- the table ------------------------------------------------------------

  function queueTable() {
    if (state.tableQueued) return;
    state.tableQueued = true;
    requestAnimationFrame(() => { state.tableQueued = false; renderTable(); });
  }

  function when(seconds) {
    return seconds ? new Date(seconds * 1000).toLocaleTimeString() : '';
  }

  function duration(entry) {
    if (!entry.started_at) return '';
    const end = entry.ended_at || Date.now() / 1000;
    return (end - entry.started_at).toFixed(1) + ' s';
  }

  function bytesOut(entry) {
    return (entry.stdout_bytes || 0) + (entry.stderr_bytes || 0) + (entry.pty_bytes || 0);
  }

  function renderTable() {
    const rows = $('rows');
    const entries = [...state.processes.values()]
      .sort((a, b) => (b.started_at || 0) - (a.started_at || 0));
    const fresh = document.createDocumentFragment();
    for (const entry of entries) {
      const row = document.createElement('tr');
      row.dataset.processId = entry.process_id;
      if (state.view && state.view.id === entry.process_id) row.className = 'selected';
      const cells = [
        entry.state, entry.command.join(' '), entry.pid, when(entry.started_at),
        duration(entry), entry.cpu_seconds === null || entry.cpu_seconds === undefined
          ? '' : entry.cpu_seconds.toFixed(2),
        bytesOut(entry), entry.exit_code === null ? '' : entry.exit_code,
      ];
      cells.forEach((value, i) => {
        const cell = document.createElement('td');
        if (i === 0) {
          const badge = document.createElement('span');
          badge.className = 'state ' + value;
          badge.textContent = value;
          cell.appendChild(badge);
        } else {
          cell.textContent = String(value);
        }
        if (i === 1) cell.className = 'command';
        row.appendChild(cell);
      });
      row.addEventListener('click', () => openView(entry.process_id));
      fresh.appendChild(row);
    }
    rows.replaceChildren(fresh);
    $('empty').hidden = entries.length > 0;
  }

  // Counters (bytes out, CPU, duration) change without events: read them
  // again now and then, while the page is looked at.
  setInterval(async () => {
    if (document.hidden || !state.control) return;
    try {
      const table = await call('list');
      state.processes.clear();
      for (const entry of table.processes) state.processes.set(entry.process_id, entry);
      queueTable();
    } catch (e) { /* reconnecting */ }
  }, LIST_EVERY_MS);

  // -- starting a program ---------------------------------------------------

  function fillPrograms(programs) {
    const select = $('start-program');
    const names = [...new Set(programs.map((p) => p.name))];
    select.replaceChildren(...names.map((name) => {
      const option = document.createElement('option');
      option.value = option.textContent = name;
      return option;
    }));
  }

  // Words as a POSIX shell splits them (quotes and backslashes), no expansion.
  function splitWords(text) {
    const words = [];
    let word = null, quote = null;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (quote) {
        if (c === quote) quote = null;
        else if (c === '\\' && quote === '"' && i + 1 < text.length) word += text[++i];
        else word += c;
      } else if (c === '"' || c === "'") {
        quote = c; word = word || '';
      } else if (c === '\\' && i + 1 < text.length) {
        word = (word || '') + text[++i];
      } else if (/\s/.test(c)) {
        if (word !== null) { words.push(word); word = null; }
      } else {
        word = (word || '') + c;
      }
    }
    if (quote) throw new Error('a quote is not closed');
    if (word !== null) words.push(word);
    return words;
  }

  $('start-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('start-message').textContent = '';
    try {
      const params = {
        command: [$('start-program').value, ...splitWords($('start-args').value)],
        // A browser never holds a program back, and closing the tab
        // does not end it.
        on_full: 'drop', on_disconnect: 'keep', stdin: true, encoding: 'binary',
      };
      if ($('start-cwd').value) params.cwd = $('start-cwd').value;
      if ($('start-pty').checked) {
        params.pty = {rows: 24, cols: 80};
        delete params.stdin;
      }
      if ($('start-durable').checked) params.durable = true;
      const result = await call('execute', params);
      // execute subscribed the control connection: its output is read on
      // the output connection instead, from its first byte (held).
      call('detach', {process_id: result.process_id}).catch(() => {});
      openView(result.process_id, {command: params.command, pty: params.pty, state: 'running'}, true);
    } catch (e) {
      $('start-message').textContent = e.message;
    }
  });

  // -- one program ----------------------------------------------------------

  function showState(text) {
    const badge = $('view-state');
    badge.textContent = text;
    badge.className = 'state ' + text.split(' ')[0];
  }

  function viewMessage(text) { $('view-message').textContent = text; }

  async function openView(id, started, fromStart) {
    const old = state.view;
    if (old && old.id !== id) {
      outputCall('detach', {process_id: old.id}).catch(() => {});
    }
    if (old && old.term) old.term.dispose();
    if (old && old.resizeObserver) old.resizeObserver.disconnect();
    const entry = state.processes.get(id) || started || {command: [], state: 'running'};
    const pty = Boolean(entry.pty);
    const view = {
      id, pty, decoders: {}, next: {}, pending: [], pendingBytes: 0, queued: false,
      following: true, drops: 0, term: null, size: null, chars: 0, skipped: {},
    };
    state.view = view;
    $('view').hidden = false;
    $('view-id').textContent = id;
    $('view-command').textContent = entry.command.join(' ');
    showState(entry.state);
    viewMessage('');
    $('output').replaceChildren();
    $('drops').replaceChildren();
    $('drop-count').textContent = 'none';
    $('output').hidden = pty;
    $('terminal').hidden = !pty;
    $('output-tools').hidden = pty;
    $('live').hidden = true;
    queueTable();
    if (pty) openTerminal(view, entry);
    const offsets = {};
    for (const stream of pty ? ['pty'] : ['stdout', 'stderr']) {
      offsets[stream] = fromStart ? 0 : Math.max(0, (entry[stream + '_bytes'] || 0) - TAIL_BYTES);
    }
    try {
      const result = await outputCall('attach', {
        process_id: id, on_full: 'drop', encoding: 'binary', offsets,
      });
      if (state.view === view) showState(result.state);
    } catch (e) {
      viewMessage(e.message);
    }
  }

  function openTerminal(view, entry) {
    const term = new Terminal({scrollback: 5000, fontSize: 13, convertEol: false});
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open($('terminal'));
    view.term = term;
    term.onData((data) => {
      call('write', {process_id: view.id, data}).catch((e) => viewMessage(e.message));
    });
    let timer = null;
    const resized = () => {
      fit.fit();
      clearTimeout(timer);
      timer = setTimeout(() => {
        const size = term.rows + 'x' + term.cols;
        if (state.view !== view || view.size === size || !entry.pty) return;
        view.size = size;
        call('resize', {process_id: view.id, rows: term.rows, cols: term.cols})
          .catch(() => {});
      }, 150);
    };
    view.resizeObserver = new ResizeObserver(resized);
    view.resizeObserver.observe($('terminal'));
    resized();
  }

  // Output of the program shown: gathered, and shown once per frame.
  function output(stream, offset, bytes) {
    const view = state.view;
    if (view.pty) {
      view.next.pty = offset + bytes.length;
      view.term.write(new Uint8Array(bytes));
      return;
    }
    view.pending.push({stream, offset, bytes});
    view.pendingBytes += bytes.length;
    // The page is far behind what it received (its frames do not come):
    // keep the newest, and say exactly which bytes it did not show.
    while (view.pendingBytes > PENDING_BYTES) skip(view, view.pending.shift());
    if (!view.queued) {
      view.queued = true;
      requestAnimationFrame(() => flush(view));
    }
  }

  // Output received but not shown, gathered into one range per stream
  // until the next frame reports it.
  function skip(view, chunk) {
    view.pendingBytes -= chunk.bytes.length;
    const end = chunk.offset + chunk.bytes.length;
    const range = view.skipped[chunk.stream];
    if (range && range[1] === chunk.offset) range[1] = end;
    else {
      if (range) reportSkipped(view, chunk.stream);
      view.skipped[chunk.stream] = [chunk.offset, end];
    }
    view.next[chunk.stream] = end;
    view.decoders[chunk.stream] = null;
  }

  function reportSkipped(view, stream) {
    const [start, end] = view.skipped[stream];
    delete view.skipped[stream];
    dropped(stream, start, end - start, 'not shown: the page fell behind');
  }

  function decoder(view, stream, offset) {
    // A gap (a drop) starts the text anew: a character is not continued
    // across bytes that never came.
    if (!view.decoders[stream] || view.next[stream] !== offset) {
      view.decoders[stream] = new TextDecoder('utf-8');
    }
    return view.decoders[stream];
  }

  // The pane is a column of blocks, each some whole lines (the last one
  // may be open: a line not ended yet): appending lays out only the new
  // block, not everything shown, which keeps a flood cheap to show.
  function flush(view) {
    view.queued = false;
    if (state.view !== view) return;
    const pane = $('output');
    const atBottom = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 20;
    // One frame shows at most FRAME_BYTES, the oldest waiting; the rest
    // waits for the next frames (up to PENDING_BYTES, see output): a flood
    // costs each frame the same, and the page stays responsive.
    for (const stream of Object.keys(view.skipped)) reportSkipped(view, stream);
    let shown = 0, upto = 0;
    while (upto < view.pending.length && (upto === 0 ||
           shown + view.pending[upto].bytes.length <= FRAME_BYTES)) {
      shown += view.pending[upto++].bytes.length;
    }
    const now = view.pending.slice(0, upto);
    view.pending = view.pending.slice(upto);
    view.pendingBytes -= shown;
    if (view.pending.length) {
      view.queued = true;
      requestAnimationFrame(() => flush(view));
    }
    const segments = [];
    for (const chunk of now) {
      const text = decoder(view, chunk.stream, chunk.offset).decode(chunk.bytes, {stream: true});
      view.next[chunk.stream] = chunk.offset + chunk.bytes.length;
      if (!view.following || !text) continue;
      const last = segments[segments.length - 1];
      if (last && last.stream === chunk.stream) last.text += text;
      else segments.push({stream: chunk.stream, text, start: chunk.offset});
    }
    let block = pane.lastElementChild;
    if (!block || block.dataset.open !== '1') block = null;
    for (const segment of segments) {
      const cut = segment.text.lastIndexOf('\n') + 1;
      if (cut > 0) {
        // Whole lines: they end the open block.
        block = append(view, pane, block, segment.stream, segment.start, segment.text.slice(0, cut));
        block.dataset.open = '0';
        block = null;
        if (cut === segment.text.length) continue;
        segment.start += new TextEncoder().encode(segment.text.slice(0, cut)).length;
        segment.text = segment.text.slice(cut);
      }
      block = append(view, pane, block, segment.stream, segment.start, segment.text);
      block.dataset.open = '1';
    }
    trim(view, pane, true);
    if (atBottom && view.following) pane.scrollTop = pane.scrollHeight;
  }

  function append(view, pane, block, stream, start, text) {
    if (!block) {
      block = document.createElement('div');
      block.className = 'block';
      pane.appendChild(block);
    }
    let span = block.lastElementChild;
    if (!span || span.dataset.stream !== stream) {
      span = document.createElement('span');
      span.className = stream;
      span.dataset.stream = stream;
      span.dataset.start = start;
      block.appendChild(span);
    }
    span.appendChild(document.createTextNode(text));
    view.chars += text.length;
    return block;
  }

  // Keep the pane within PANE_CHARS: the oldest output goes (it can be read
  // again from ccx), or, after reading back, the newest.
  function trim(view, pane, oldest) {
    while (view.chars > PANE_CHARS && pane.childNodes.length > 1) {
      const gone = oldest ? pane.firstChild : pane.lastChild;
      view.chars -= gone.textContent.length;
      gone.remove();
    }
  }

  function dropped(stream, offset, bytes, why) {
    const view = state.view;
    view.drops += 1;
    $('drop-count').textContent = view.drops + ' range' + (view.drops === 1 ? '' : 's');
    const text = stream + ' bytes ' + offset + '–' + (offset + bytes) + ' (' + bytes + ' bytes) ' + why;
    const item = document.createElement('li');
    item.textContent = text;
    const list = $('drops');
    list.appendChild(item);
    while (list.childNodes.length > MAX_DROPS) list.firstChild.remove();
    if (!view.pty && view.following) {
      const gap = document.createElement('span');
      gap.className = 'gap';
      gap.textContent = '[' + text + ']';
      view.chars += gap.textContent.length;
      $('output').appendChild(gap);
    }
  }

  function firstShown(stream) {
    const span = $('output').querySelector('span.' + stream);
    return span ? Number(span.dataset.start) : state.view.next[stream];
  }

  // Scrollback: the output before what is shown, read from ccx (its memory
  // or its journal) as the reader asks for it.
  async function earlier() {
    const view = state.view;
    if (!view || view.pty || view.reading) return;
    view.reading = true;
    try {
      const pane = $('output');
      let added = 0;
      for (const stream of ['stderr', 'stdout']) {
        const first = firstShown(stream);
        if (!first) continue;
        const from = Math.max(0, first - READ_BYTES);
        const result = await call('read', {
          process_id: view.id, stream, offset: from, bytes: first - from,
        });
        if (state.view !== view || !result.bytes) continue;
        const bytes = Uint8Array.from(atob(result.data), (c) => c.charCodeAt(0));
        const span = document.createElement('span');
        span.className = stream;
        span.dataset.stream = stream;
        span.dataset.start = result.offset;
        span.dataset.end = result.offset + result.bytes;
        span.textContent = new TextDecoder('utf-8').decode(bytes);
        view.chars += span.textContent.length;
        const block = document.createElement('div');
        block.className = 'block';
        block.appendChild(span);
        pane.insertBefore(block, pane.firstChild);
        added += result.bytes;
      }
      if (!added) { viewMessage('no earlier output is held'); return; }
      if (view.chars > PANE_CHARS) {
        // Reading back: what is newest leaves the pane, and live output
        // waits for "Back to live output".
        view.following = false;
        $('live').hidden = false;
        trim(view, pane, false);
      }
    } catch (e) {
      viewMessage(e.message);
    } finally {
      view.reading = false;
    }
  }

  $('earlier').addEventListener('click', earlier);
  $('output').addEventListener('scroll', () => {
    if ($('output').scrollTop === 0) earlier();
  });
  $('live').addEventListener('click', () => openView(state.view.id));

  async function control(type) {
    const view = state.view;
    try {
      const result = await call('control', {type, process_id: view.id});
      if (state.view === view) {
        showState({paused: 'paused', resumed: 'running', cancelled: 'cancelling'}[result.status]);
      }
    } catch (e) {
      viewMessage(e.message);
    }
  }

  $('pause').addEventListener('click', () => control('PAUSE'));
  $('resume').addEventListener('click', () => control('RESUME'));
  $('cancel').addEventListener('click', () => control('CANCEL'));
  $('send-signal').addEventListener('click', async () => {
    try {
      const result = await call('signal', {process_id: state.view.id, signal: $('signal').value});
      viewMessage(result.signal + ' sent');
    } catch (e) {
      viewMessage(e.message);
    }
  });
  $('close-view').addEventListener('click', () => {
    const view = state.view;
    if (!view) return;
    outputCall('detach', {process_id: view.id}).catch(() => {});
    if (view.term) view.term.dispose();
    if (view.resizeObserver) view.resizeObserver.disconnect();
    state.view = null;
    $('view').hidden = true;
    queueTable();
  });

  $('stdin-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = $('stdin').value + (state.view.pty ? '\r' : '\n');
    try {
      await call('write', {process_id: state.view.id, data});
      $('stdin').value = '';
    } catch (e) {
      viewMessage(e.message);
    }
  });
  $('eof').addEventListener('click', () => {
    call('write', {process_id: state.view.id, data: '', eof: true})
      .catch((e) => viewMessage(e.message));
  });

  begin();
})();
