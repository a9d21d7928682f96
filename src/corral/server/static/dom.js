// Small DOM and formatting helpers of the corral page.
//
// Everything that comes from the server is written with textContent and attributes only;
// innerHTML is never used with data.

export const $ = (id) => document.getElementById(id);

export function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Make an element. `attrs`: `className`, `text`, `dataset` {}, `hidden`, `on` {event: fn}; any
 * other key is set with setAttribute (`true` sets it empty; null, undefined and false skip it).
 */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'className') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'hidden') node.hidden = true;
    else if (key === 'dataset') {
      for (const [k, v] of Object.entries(value)) if (v != null) node.dataset[k] = String(v);
    } else if (key === 'on') {
      for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    } else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
}

/** "run_8f3k2m…" → "8f3k2m": drop the type prefix, keep 8 characters. */
export function shortId(id) {
  const core = String(id ?? '').replace(/^[a-z]{1,8}_/i, '');
  return core.length > 10 ? core.slice(0, 8) : core;
}

const pad = (n, width = 2) => String(n).padStart(width, '0');

export function formatClock(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '';
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** The time of day for today, else the date and time. */
export function formatWhen(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '';
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === new Date().toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

export function formatDuration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function toJson(value, indent = 2) {
  try {
    return JSON.stringify(value, null, indent) ?? String(value);
  } catch {
    return String(value);
  }
}

export function truncate(text, max) {
  const s = String(text);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** The text a person typed into a run's input: its question or message, else its JSON. */
export function inputText(input) {
  if (isPlainObject(input)) {
    const main = ['question', 'message', 'prompt', 'text', 'query'].find((k) => typeof input[k] === 'string');
    if (main) return input[main];
  }
  return toJson(input, 0);
}

const PREVIEW_CHARS = 600;
const PREVIEW_LINES = 12;

/**
 * Pretty JSON in a `pre` (a string is shown as it is), folded with a "Show all" toggle when
 * long. `compact` puts short values on one line.
 */
export function jsonBlock(value, compact = false) {
  let full = typeof value === 'string' ? value : toJson(value);
  if (compact && typeof value !== 'string') {
    const oneLine = toJson(value, 1).replace(/\n\s*/g, ' '); // JSON strings hold no raw newline
    if (oneLine.length <= 100) full = oneLine;
  }
  const pre = el('pre', { className: 'json' });
  const wrap = el('div', { className: compact ? 'json-wrap compact' : 'json-wrap' }, pre);
  let preview = full;
  if (full.length > PREVIEW_CHARS || full.split('\n').length > PREVIEW_LINES) {
    preview = `${full.split('\n').slice(0, PREVIEW_LINES).join('\n').slice(0, PREVIEW_CHARS)}\n…`;
  }
  pre.textContent = preview;
  if (preview !== full) {
    const label = `Show all (${full.length.toLocaleString()} characters)`;
    const button = el('button', {
      type: 'button', className: 'btn-link', 'aria-expanded': 'false', text: label,
    });
    button.addEventListener('click', () => {
      const open = button.getAttribute('aria-expanded') !== 'true';
      pre.textContent = open ? full : preview;
      button.textContent = open ? 'Show less' : label;
      button.setAttribute('aria-expanded', String(open));
    });
    wrap.append(button);
  }
  return wrap;
}

/** A short notice in the corner; errors are announced as alerts. */
export function notify(text, kind = 'info', ttlMs = 8000) {
  const box = $('notices');
  const close = el('button', { type: 'button', className: 'notice-close', 'aria-label': 'Dismiss', text: '×' });
  const item = el('div', { className: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    el('span', { className: 'notice-text', text }), close);
  close.addEventListener('click', () => item.remove());
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  if (ttlMs > 0) setTimeout(() => item.remove(), ttlMs);
}

/** Say `text` to screen readers (a polite live region), without showing anything. */
export function announce(text) {
  $('announcer').textContent = text;
}

/** Show `text` in a message box, or hide the box when `text` is empty. */
export function showMessage(node, text, kind = 'error') {
  node.textContent = text ?? '';
  node.dataset.kind = kind;
  node.hidden = !text;
}

/** A sentence for a refusal (a CorralError) or any other failure. */
export function errorText(err) {
  if (!err) return 'Something went wrong.';
  let text = err.message || String(err);
  if (err.code === 'rate_limited' && err.retryAfter != null) text += ` (try again in ${err.retryAfter} s)`;
  return text;
}
