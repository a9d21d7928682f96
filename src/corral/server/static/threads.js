// The user's threads (contract §10): the list in the side bar (most recently updated first,
// paged by cursor), a new thread, and renaming and deleting the open one.

import { $, el, clear, shortId, formatWhen, errorText, showMessage } from './dom.js';

const PAGE = 20;

export const threadTitle = (thread) => thread?.title || `Thread ${shortId(thread?.thread_id)}`;

/**
 * The threads of one signed-in client. `hooks`: `open(threadId | null)` when a person picks a
 * thread (or all runs), `renamed(thread)`, `deleted(threadId)`. `isCurrent()` tells which
 * thread is open; `stale()` says the page was signed out meanwhile (drop the answer).
 */
export class Threads {
  constructor(client, hooks) {
    this.client = client;
    this.hooks = hooks;
    this.byId = new Map();
    this.items = new Map(); // thread_id -> li
    this.fetching = new Set();
    this.cursor = null;
    this.current = null;
    clear($('thread-list'));
    $('threads-more').hidden = true;
    showMessage($('threads-error'), '');
  }

  stale() {
    return this.hooks.stale();
  }

  async load(more = false) {
    const button = $('threads-more');
    button.disabled = true;
    const cursor = more && this.cursor ? `&cursor=${encodeURIComponent(this.cursor)}` : '';
    try {
      const page = await this.client.request('GET', `/v1/threads?limit=${PAGE}${cursor}`);
      if (this.stale()) return;
      for (const thread of page.threads) this.upsert(thread);
      this.cursor = page.next_cursor;
      button.hidden = !this.cursor;
      showMessage($('threads-error'), '');
    } catch (err) {
      if (!this.stale()) showMessage($('threads-error'), `Could not load the threads: ${errorText(err)}`);
    } finally {
      button.disabled = false;
    }
  }

  /** Add or change a thread in the list, keeping the most recently updated first. */
  upsert(thread) {
    const known = this.byId.get(thread.thread_id);
    const merged = { ...known, ...thread };
    if (known && known.updated_at > merged.updated_at) merged.updated_at = known.updated_at;
    this.byId.set(thread.thread_id, merged);
    let li = this.items.get(thread.thread_id);
    if (!li) {
      const button = el('button', { type: 'button', className: 'thread-open' },
        el('span', { className: 'thread-title' }), el('span', { className: 'thread-meta' }));
      button.addEventListener('click', () => this.hooks.open(thread.thread_id));
      li = el('li', { className: 'thread', dataset: { threadId: thread.thread_id } }, button);
      this.items.set(thread.thread_id, li);
    }
    li.querySelector('.thread-title').textContent = threadTitle(merged);
    li.querySelector('.thread-meta').textContent = formatWhen(merged.updated_at);
    li.querySelector('.thread-meta').title = `updated ${merged.updated_at}`;
    li.firstElementChild.setAttribute('aria-current', String(this.current === thread.thread_id));
    li.dataset.updated = merged.updated_at;
    const list = $('thread-list');
    const after = [...list.children].find((other) => other !== li && other.dataset.updated < merged.updated_at);
    if (after) list.insertBefore(li, after);
    else list.append(li);
    return merged;
  }

  /** A run of `threadId` started at `ts`: move the thread up, or fetch one not listed yet. */
  async touch(threadId, ts) {
    if (this.byId.has(threadId)) {
      this.upsert({ thread_id: threadId, updated_at: ts });
      return;
    }
    if (this.fetching.has(threadId)) return;
    this.fetching.add(threadId);
    try {
      const thread = await this.client.request('GET', `/v1/threads/${encodeURIComponent(threadId)}`);
      // Listed meanwhile (say, named by its first run): what came since is newer than this read.
      const fresh = this.byId.has(threadId) ? { thread_id: threadId, updated_at: thread.updated_at } : thread;
      if (!this.stale()) this.upsert(fresh);
    } catch {
      // deleted meanwhile: nothing to list
    } finally {
      this.fetching.delete(threadId);
    }
  }

  /** The thread, fetched if it is not in the list yet (null if it is gone). */
  async get(threadId) {
    if (!this.byId.has(threadId)) await this.touch(threadId, '');
    return this.byId.get(threadId) ?? null;
  }

  setCurrent(threadId) {
    this.current = threadId;
    $('all-runs').setAttribute('aria-current', String(threadId === null));
    for (const [id, li] of this.items) li.firstElementChild.setAttribute('aria-current', String(id === threadId));
    this.cancelRename();
  }

  async create() {
    try {
      const thread = await this.client.request('POST', '/v1/threads', { body: {} });
      if (this.stale()) return;
      this.upsert(thread);
      this.hooks.open(thread.thread_id);
    } catch (err) {
      if (!this.stale()) showMessage($('threads-error'), `Could not make a thread: ${errorText(err)}`);
    }
  }

  /** Name a thread (the page names a new thread after its first question). */
  async setTitle(threadId, title) {
    const thread = await this.client.request('PATCH', `/v1/threads/${encodeURIComponent(threadId)}`, {
      body: { title: title || null },
    });
    if (!this.stale()) this.hooks.renamed(this.upsert(thread));
    return thread;
  }

  // -- rename and delete the open thread ------------------------------------------------------

  startRename() {
    const input = $('rename-input');
    input.value = this.byId.get(this.current)?.title ?? '';
    showMessage($('rename-error'), '');
    $('rename-form').hidden = false;
    $('thread-actions').hidden = true;
    input.focus();
    input.select();
  }

  cancelRename() {
    $('rename-form').hidden = true;
    $('thread-actions').hidden = this.current === null;
  }

  async submitRename() {
    const threadId = this.current;
    const save = $('rename-save');
    save.disabled = true;
    try {
      await this.setTitle(threadId, $('rename-input').value.trim());
      if (this.current === threadId) {
        this.cancelRename();
        $('thread-rename').focus();
      }
    } catch (err) {
      showMessage($('rename-error'), errorText(err));
    } finally {
      save.disabled = false;
    }
  }

  /** Ask first (a modal dialog); then delete the thread, its runs and their events. */
  confirmDelete() {
    const threadId = this.current;
    const dialog = $('delete-dialog');
    $('delete-name').textContent = threadTitle(this.byId.get(threadId));
    dialog.returnValue = '';
    dialog.addEventListener('close', async () => {
      if (dialog.returnValue !== 'delete') {
        $('thread-delete').focus();
        return;
      }
      try {
        await this.client.request('DELETE', `/v1/threads/${encodeURIComponent(threadId)}`);
      } catch (err) {
        // Already gone is what was asked for; anything else is said.
        if (err.code !== 'not_found') {
          if (!this.stale()) showMessage($('threads-error'), `Could not delete the thread: ${errorText(err)}`);
          return;
        }
      }
      if (this.stale()) return;
      this.byId.delete(threadId);
      this.items.get(threadId)?.remove();
      this.items.delete(threadId);
      this.hooks.deleted(threadId);
    }, { once: true });
    dialog.showModal();
  }
}
