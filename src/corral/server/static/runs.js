// One run on the page: a card with its header, its live timeline, its open question and its
// output or error.
//
// The client delivers each run's events once each and in seq order, so a card only appends:
// one element per event, carrying `data-seq` and `data-type` — a row `li.ev` for most types;
// a tool call's row carries its `tool_executing` and the row's `.tool-result` its
// `tool_completed`; each answer delta is a `span.delta` in the one answer row.

import {
  el, clear, shortId, formatClock, formatWhen, formatDuration, toJson, truncate, isPlainObject,
  jsonBlock, inputText, errorText, announce,
} from './dom.js';
import { schemaForm } from './schema-form.js';

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'timed_out']);
const RANK = { queued: 0, running: 1, waiting: 1, succeeded: 2, failed: 2, cancelled: 2, timed_out: 2 };
const LABEL = { waiting: 'waiting for you', timed_out: 'timed out' };
const DELTAS = new Set(['text_delta', 'answer_delta']);
const ENDED = 'The run ended before an answer.';
const CLOSED = 'This question was already answered, or it is closed.';
const EMPTY = { queued: 'Queued — waiting for a free slot…', succeeded: 'No events.', failed: 'No events.',
  cancelled: 'No events.', timed_out: 'No events.' };
const sub = (text) => el('span', { className: 'sub-label', text });

export const isTerminal = (status) => TERMINAL.has(status);

/**
 * A run's card. `actions`: `cancel(runId)`, `answer(runId, requestId, value)` (promises of the
 * run object), `openThread(threadId)` and `needEvents(runId)` (asked when the card is first
 * opened). Feed it the run object with `update(run)` and each event with `apply(event)`.
 */
export class RunCard {
  constructor(run, actions) {
    this.id = run.run_id;
    this.actions = actions;
    this.run = { run_id: run.run_id };
    this.status = null;
    this.seenEvents = false;
    this.tools = new Map(); // call_id -> {li, status, duration, result}
    this.answerRow = null;
    this.questions = new Map(); // request_id -> its open form (or the note in its place)
    this.asked = false;
    this.build();
    this.update(run);
  }

  build() {
    const bodyId = `run-body-${this.id.replace(/[^A-Za-z0-9_-]/g, '_')}`;
    this.toggle = el('button', {
      type: 'button', className: 'run-toggle', 'aria-expanded': 'false', 'aria-controls': bodyId,
    },
      el('span', { className: 'chevron', 'aria-hidden': 'true' }),
      el('span', { className: 'visually-hidden', text: `Events of run ${this.id}` }));
    this.agent = el('span', { className: 'run-agent' });
    this.badge = el('span', { className: 'badge' });
    this.when = el('span', { className: 'run-time' });
    this.duration = el('span', { className: 'run-duration' });
    this.threadButton = el('button', {
      type: 'button', className: 'btn btn-quiet btn-small run-thread', text: 'Open thread',
    });
    this.cancelButton = el('button', {
      type: 'button', className: 'btn btn-danger btn-small run-cancel', text: 'Cancel',
    });
    const head = el('header', { className: 'run-head' }, this.toggle, this.agent,
      el('code', { className: 'run-id', title: this.id, text: shortId(this.id) }), this.badge,
      el('span', { className: 'run-meta' }, this.when, this.duration),
      el('span', { className: 'run-actions' }, this.threadButton, this.cancelButton));
    this.inputLine = el('p', { className: 'run-input' });
    this.timeline = el('ol', { className: 'timeline', 'aria-label': 'Events' });
    this.body = el('div', { className: 'run-body', id: bodyId, hidden: true }, this.timeline);
    this.output = el('div', { className: 'output' });
    this.outputWrap = el('section', { className: 'output-wrap', 'aria-label': 'Output', hidden: true },
      el('h4', { className: 'block-title', text: 'Output' }), this.output);
    this.errorBlock = el('div', { className: 'run-error', role: 'status', hidden: true });
    const name = `Run ${shortId(this.id)}`;
    this.node = el('article', { className: 'run', dataset: { runId: this.id }, 'aria-label': name },
      head, this.inputLine, this.body, this.outputWrap, this.errorBlock);

    this.toggle.addEventListener('click', () => this.expand(this.body.hidden));
    head.addEventListener('click', (event) => {
      if (!event.target.closest('button, a, code')) this.expand(this.body.hidden);
    });
    this.cancelButton.addEventListener('click', () => this.cancel());
    this.threadButton.addEventListener('click', () => this.actions.openThread(this.run.thread_id));
  }

  /** Open or close the timeline; the first opening asks for the run's events. */
  expand(open) {
    this.body.hidden = !open;
    this.toggle.setAttribute('aria-expanded', String(open));
    if (open && !this.asked) {
      this.asked = true;
      this.actions.needEvents(this.id);
    }
  }

  /** Take a run object (from a start or a listing); its status only ever moves forward. */
  update(run) {
    Object.assign(this.run, run);
    this.agent.textContent = this.run.agent || 'run';
    this.when.textContent = formatWhen(this.run.created_at);
    this.when.title = this.run.created_at ? `created ${this.run.created_at}` : '';
    const took = Date.parse(this.run.finished_at) - Date.parse(this.run.started_at);
    if (Number.isFinite(took)) this.duration.textContent = `· ${formatDuration(took)}`;
    this.threadButton.hidden = !this.run.thread_id;
    if (run.input !== undefined) {
      const text = inputText(run.input);
      this.inputLine.textContent = truncate(text, 240);
      this.inputLine.title = text.length > 240 ? truncate(text, 4000) : '';
    }
    const rank = RANK[run.status] ?? -1;
    const current = RANK[this.status] ?? -1;
    // Events say more than an older run object, except that a run object may end the run.
    if (rank > current || (rank === current && !this.seenEvents && rank < 2)) this.setStatus(run.status);
    if (!this.seenEvents || rank === 2) {
      if (run.status === 'succeeded' && run.output != null && this.outputWrap.hidden) this.renderOutput(run.output);
      if (isPlainObject(run.error) && this.errorBlock.hidden) this.renderError(run.error);
    }
  }

  setStatus(status) {
    if (!(status in RANK) || isTerminal(this.status)) return;
    this.status = status;
    this.node.dataset.status = status;
    this.badge.dataset.status = status;
    this.badge.textContent = LABEL[status] ?? status;
    const done = isTerminal(status);
    this.cancelButton.hidden = done;
    this.answerRow?.classList.toggle('streaming', !done);
    this.timeline.dataset.empty = EMPTY[status] ?? 'Waiting for events…';
    if (done) for (const requestId of this.questions.keys()) this.closeQuestion(requestId, ENDED);
  }

  async cancel() {
    this.cancelButton.disabled = true;
    try {
      this.update(await this.actions.cancel(this.id));
    } catch (err) {
      // A conflict: it had finished already; its terminal event tells the rest.
      if (err.code !== 'conflict') this.actions.notify(`Could not cancel the run: ${errorText(err)}`);
    } finally {
      this.cancelButton.disabled = false;
    }
  }

  // -- events ----------------------------------------------------------------------------------

  row(ev, kind, label, ...content) {
    const li = el('li', { className: `ev ev-${kind}`, dataset: { seq: ev.seq, type: ev.type } },
      el('span', {
        className: 'ev-time', title: ev.seq ? `${ev.ts} · seq ${ev.seq}` : ev.ts, text: formatClock(ev.ts),
      }),
      el('span', { className: 'ev-kind', text: label }),
      el('div', { className: 'ev-main' }, ...content));
    this.timeline.append(li);
    return li;
  }

  apply(ev) {
    const stick = this.timeline.scrollHeight - this.timeline.scrollTop - this.timeline.clientHeight < 24;
    this.seenEvents = true;
    const data = isPlainObject(ev.data) ? ev.data : {};
    const text = (value) => el('span', { className: 'ev-text', text: value });
    switch (ev.type) {
      case 'agent_started':
        this.setStatus('running');
        if (!this.run.agent && data.agent) this.update({ agent: data.agent });
        this.row(ev, 'started', 'started', text(`Run started${data.agent ? ` · ${data.agent}` : ''}`));
        break;
      case 'agent_thinking': {
        const steps = data.total_steps ? `${data.step}/${data.total_steps}` : data.step;
        const step = typeof data.step === 'number' ? el('span', { className: 'step', text: steps }) : null;
        this.row(ev, 'thinking', 'thinking', step, text(String(data.text ?? '')));
        break;
      }
      case 'tool_executing':
        this.toolStarted(ev, data);
        break;
      case 'tool_completed':
        this.toolCompleted(ev, data);
        break;
      case 'agent_update':
        this.agentUpdate(ev, data);
        break;
      case 'input_requested':
        this.setStatus('waiting');
        this.ask(ev, data);
        break;
      case 'input_received':
        this.setStatus('running');
        this.closeQuestion(data.request_id, null);
        this.row(ev, 'received', 'answered', sub('answer'), jsonBlock(data.value, true));
        break;
      case 'agent_completed':
        this.setStatus('succeeded');
        this.row(ev, 'completed', 'completed', text(`Completed in ${formatDuration(data.duration_ms)}`));
        this.renderOutput(data.output);
        this.errorBlock.hidden = true;
        break;
      case 'agent_error': {
        const error = isPlainObject(data.error) ? data.error : { type: 'error', message: String(data.error) };
        this.setStatus(error.type === 'timeout' ? 'timed_out' : 'failed');
        this.row(ev, 'error', error.type === 'timeout' ? 'timed out' : 'error',
          el('code', { className: 'err-type', text: String(error.type) }), text(` ${error.message ?? ''}`));
        this.renderError(error);
        break;
      }
      case 'agent_cancelled':
        this.setStatus('cancelled');
        this.row(ev, 'cancelled', 'cancelled', text(`Cancelled${data.reason ? `: ${data.reason}` : ''}`));
        break;
      default:
        this.row(ev, 'other', ev.type.replace(/_/g, ' '), jsonBlock(ev.data));
    }
    if (TERMINAL.has(this.status) && typeof data.duration_ms === 'number') {
      this.duration.textContent = `· ${formatDuration(data.duration_ms)}`;
    }
    if (stick) this.timeline.scrollTop = this.timeline.scrollHeight;
  }

  toolStarted(ev, data) {
    const status = el('span', { className: 'tool-status', dataset: { status: 'running' }, text: 'running…' });
    const duration = el('span', { className: 'tool-duration' });
    const result = el('div', { className: 'tool-result', hidden: true });
    const li = this.row(ev, 'tool', 'tool',
      el('div', { className: 'tool-head' },
        el('code', { className: 'tool-name', text: String(data.tool ?? 'tool') }), status, duration),
      el('div', { className: 'tool-args' }, sub('args'), jsonBlock(data.args ?? {}, true)),
      result);
    li.dataset.callId = String(data.call_id);
    li.dataset.toolStatus = 'running';
    this.tools.set(String(data.call_id), { li, status, duration, result });
  }

  toolCompleted(ev, data) {
    const tool = this.tools.get(String(data.call_id));
    if (!tool) {
      this.row(ev, 'other', 'tool completed', jsonBlock(data, true)); // its start was never seen
      return;
    }
    const status = String(data.status ?? 'success');
    tool.li.dataset.toolStatus = status;
    tool.status.dataset.status = status;
    tool.status.textContent = status === 'success' ? 'done' : status;
    tool.duration.textContent = formatDuration(data.duration_ms);
    Object.assign(tool.result.dataset, { seq: ev.seq, type: ev.type });
    tool.result.title = `finished ${formatClock(ev.ts)} · seq ${ev.seq}`;
    if (status === 'success') {
      tool.result.append(sub('result'), jsonBlock(data.result ?? null, true));
    } else {
      const err = data.error;
      const message = isPlainObject(err) ? `${err.type ? `${err.type}: ` : ''}${err.message ?? toJson(err, 0)}`
        : err != null ? String(err) : `The tool ${status === 'timeout' ? 'timed out' : 'failed'}.`;
      tool.result.append(sub('error'), el('p', { className: 'tool-error', text: message }));
    }
    tool.result.hidden = false;
  }

  /** `agent_update`: a text delta joins the answer row; any other kind is a row of its own. */
  agentUpdate(ev, data) {
    if (DELTAS.has(data.kind) && typeof data.text === 'string') {
      if (!this.answerRow) {
        this.answer = el('div', { className: 'answer', 'aria-label': 'Answer' });
        this.answerRow = this.row({ ...ev, seq: undefined, type: undefined }, 'answer', 'answer', this.answer);
        this.answerRow.classList.toggle('streaming', !isTerminal(this.status));
      }
      this.answer.append(el('span', { className: 'delta', dataset: { seq: ev.seq, type: ev.type }, text: data.text }));
      return;
    }
    const { kind, text, ...rest } = data;
    this.row(ev, 'update', String(kind ?? 'update').replace(/_/g, ' '),
      typeof text === 'string' ? el('span', { className: 'ev-text', text }) : null,
      Object.keys(rest).length ? jsonBlock(rest, true) : null);
  }

  // -- questions (contract §9) -----------------------------------------------------------------

  /** Show the prompt and a form made from the schema; sending it answers the run. */
  ask(ev, data) {
    const requestId = String(data.request_id);
    const promptId = `q-${this.id}-${ev.seq}-prompt`;
    const prompt = el('p', { id: promptId, className: 'question-prompt', text: String(data.prompt ?? '') });
    if (isTerminal(this.status)) {
      // The replay of a run that has ended: its answer, if one came, is next in the replay.
      const note = el('p', { className: 'question-closed', text: ENDED });
      this.row(ev, 'question', 'question', prompt, note);
      this.questions.set(requestId, note);
      return;
    }
    const errorBox = el('div', { className: 'form-errors', role: 'alert', hidden: true });
    const fields = schemaForm(data.schema ?? null, {
      idPrefix: `q-${this.id}-${ev.seq}-`, base: 'value', errorBox, legend: 'Your answer',
    });
    const send = el('button', { type: 'submit', className: 'btn btn-primary', text: 'Send answer' });
    const form = el('form', { className: 'question-form stack', novalidate: true, 'aria-labelledby': promptId },
      fields.node, errorBox, el('div', { className: 'row' }, send));
    this.row(ev, 'question', 'question', prompt, form);
    this.questions.set(requestId, form);
    announce(`A ${this.run.agent || 'run'} run asks you: ${data.prompt}`);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const got = fields.read();
      if (!got.ok) return;
      send.disabled = true;
      try {
        await this.actions.answer(this.id, requestId, got.value);
        // The form closes when `input_received` arrives.
        send.textContent = 'Sent';
      } catch (err) {
        send.disabled = false;
        if (err.code === 'validation_error') fields.showError(err);
        else if (err.code === 'conflict') this.closeQuestion(requestId, CLOSED);
        else fields.showError({ message: `The answer was not sent: ${errorText(err)}` });
      }
    });
    this.expand(true);
  }

  /** Take a question's form away; `note` says why (none: it was answered). */
  closeQuestion(requestId, note) {
    const form = this.questions.get(requestId);
    if (!form) return;
    this.questions.delete(requestId);
    const focused = form.contains(document.activeElement);
    form.replaceWith(el('p', {
      className: note ? 'question-closed' : 'question-answered', role: 'status', text: note ?? 'Answered.',
    }));
    if (focused) this.toggle.focus(); // focus must not vanish with the form
  }

  // -- output ----------------------------------------------------------------------------------

  renderOutput(output) {
    clear(this.output);
    if (isPlainObject(output) && typeof output.answer === 'string') {
      const { answer, sources, ...rest } = output;
      this.output.append(el('p', { className: 'output-answer', text: answer }));
      // The streamed copy says the same: fold it to a short preview.
      this.answerRow?.classList.toggle('superseded', this.answer.textContent.trim() === answer.trim());
      if (Array.isArray(sources) && sources.length) {
        const source = (s) => (isPlainObject(s)
          ? el('li', {}, el('strong', { text: String(s.title ?? s.id ?? toJson(s, 0)) }),
            s.id != null && s.title != null ? el('code', { className: 'source-id', text: ` ${s.id}` }) : null)
          : el('li', { text: String(s) }));
        this.output.append(el('h5', { className: 'sources-title', text: 'Sources' }),
          el('ol', { className: 'sources' }, ...sources.map(source)));
      }
      if (Object.keys(rest).length) this.output.append(jsonBlock(rest));
    } else if (typeof output === 'string') {
      this.output.append(el('p', { className: 'output-answer', text: output }));
    } else {
      this.output.append(jsonBlock(output ?? null));
    }
    this.outputWrap.hidden = false;
  }

  renderError(error) {
    clear(this.errorBlock);
    const type = String(error.type ?? 'error');
    const heading = { timeout: 'Timed out', interrupted: 'Interrupted' }[type] ?? 'Failed';
    this.errorBlock.append(el('strong', { text: heading }), ' ', el('code', { className: 'err-type', text: type }),
      el('p', { className: 'run-error-message', text: String(error.message ?? '') }));
    this.errorBlock.hidden = false;
  }
}
