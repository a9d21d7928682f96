// A form made from a JSON Schema: an agent's input (GET /v1/agents) or the answer to a run's
// input request (contract §9).
//
// An object schema with properties becomes one field per property: a text box (a textarea for
// long text), a select for an enum, a number box for number and integer, a checkbox for
// boolean, and a JSON box for anything else. A schema that is not an object (`{"type":
// "integer"}`, an enum, …) becomes that one field, and its value is the answer itself. No schema
// at all becomes a free answer: text, or JSON when it reads as an object or a list.

import { el, clear, isPlainObject, toJson } from './dom.js';

const TEXTAREA_NAMES = new Set(['message', 'question', 'prompt']);
const SCALARS = new Set(['string', 'integer', 'number', 'boolean']);

/** Follow a local "$ref" ("#/$defs/X") and unwrap a one-entry allOf. */
function resolve(schema, root, depth = 0) {
  if (!isPlainObject(schema) || depth > 8) return isPlainObject(schema) ? schema : {};
  let s = schema;
  if (typeof s.$ref === 'string' && s.$ref.startsWith('#/')) {
    let target = root;
    for (const part of s.$ref.slice(2).split('/')) {
      target = isPlainObject(target) ? target[part.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined;
    }
    const { $ref, ...rest } = s;
    s = { ...resolve(target, root, depth + 1), ...rest };
  }
  if (Array.isArray(s.allOf) && s.allOf.length === 1) {
    const { allOf, ...rest } = s;
    s = { ...resolve(allOf[0], root, depth + 1), ...rest };
  }
  return s;
}

/** How to edit one value: `{kind, schema, values?}`; kind is a scalar type, enum or json. */
function specOf(raw, root) {
  let s = resolve(raw, root);
  const union = s.anyOf ?? s.oneOf;
  if (!s.type && Array.isArray(union)) {
    // Optional[X] is anyOf [X, null]: edit the X.
    const options = union.map((o) => resolve(o, root)).filter((o) => o.type !== 'null');
    if (options.length !== 1) return { kind: 'json', schema: s };
    const { anyOf, oneOf, ...outer } = s;
    s = { ...options[0], ...outer };
  }
  let type = s.type;
  if (Array.isArray(type)) {
    const rest = type.filter((t) => t !== 'null');
    type = rest.length === 1 ? rest[0] : 'json';
  }
  const values = Array.isArray(s.enum) ? s.enum : s.const !== undefined ? [s.const] : null;
  if (values?.length && values.every((v) => ['string', 'number', 'boolean'].includes(typeof v))) {
    return { kind: 'enum', schema: s, values };
  }
  return { kind: SCALARS.has(type) ? type : 'json', schema: s };
}

function humanize(name) {
  const s = String(name).replace(/[_-]+/g, ' ').trim();
  return s ? s[0].toUpperCase() + s.slice(1) : String(name);
}

function helpText(spec) {
  const s = spec.schema;
  const parts = s.description ? [String(s.description)] : [];
  const limits = [];
  if (typeof s.minimum === 'number') limits.push(`min ${s.minimum}`);
  if (typeof s.maximum === 'number') limits.push(`max ${s.maximum}`);
  if (typeof s.maxLength === 'number') limits.push(`up to ${s.maxLength.toLocaleString()} characters`);
  if (limits.length) parts.push(limits.join(', '));
  if ('default' in s && spec.kind !== 'boolean') parts.push(`default ${toJson(s.default, 0)}`);
  if (spec.kind === 'json') parts.push('JSON');
  if (spec.kind === 'free') parts.push('Text, or JSON for an object or a list');
  return parts.join(' · ');
}

/** One labelled control, its help and its error line. */
function buildField(name, spec, { id, label, required }) {
  const s = spec.schema;
  const help = helpText(spec);
  const helpNode = help ? el('p', { id: `${id}-help`, className: 'help', text: help }) : null;
  const errorNode = el('p', { id: `${id}-error`, className: 'field-error', hidden: true });
  const attrs = {
    id, name: name || 'answer', 'aria-describedby': [helpNode && `${id}-help`, `${id}-error`].filter(Boolean).join(' '),
    'aria-required': required ? 'true' : null,
  };
  const labelNode = el('label', { for: id, text: label },
    required ? el('span', { className: 'req', 'aria-hidden': 'true', text: ' *' }) : null);
  const hasDefault = 'default' in s && s.default !== null;
  let control;
  if (spec.kind === 'string') {
    const long = s.maxLength > 200 || TEXTAREA_NAMES.has(name.toLowerCase());
    control = el(long ? 'textarea' : 'input', { ...attrs, type: long ? null : 'text', rows: long ? 3 : null });
    if (typeof s.maxLength === 'number') control.maxLength = s.maxLength;
    if (hasDefault) control.value = String(s.default);
  } else if (spec.kind === 'integer' || spec.kind === 'number') {
    control = el('input', { ...attrs, type: 'number', step: spec.kind === 'integer' ? '1' : 'any',
      min: s.minimum, max: s.maximum });
    if (hasDefault) control.value = String(s.default);
  } else if (spec.kind === 'boolean') {
    control = el('input', { ...attrs, type: 'checkbox' });
    control.checked = Boolean(s.default);
  } else if (spec.kind === 'enum') {
    control = el('select', attrs);
    if (!hasDefault) control.append(el('option', { value: '', text: required ? 'Choose…' : '(default)' }));
    spec.values.forEach((v, i) => control.append(el('option', { value: String(i), text: String(v) })));
    const index = spec.values.findIndex((v) => v === s.default);
    if (index >= 0) control.value = String(index);
  } else {
    const mono = spec.kind === 'json' ? 'mono' : null;
    control = el('textarea', { ...attrs, rows: 3, className: mono, spellcheck: 'false' });
    if (hasDefault) control.value = toJson(s.default);
  }
  const wrapper = el('div', { className: `field field-${spec.kind}`, dataset: { field: name } });
  if (spec.kind === 'boolean') wrapper.append(el('div', { className: 'check-row' }, control, labelNode));
  else wrapper.append(labelNode, control);
  wrapper.append(helpNode ?? '', errorNode);
  return { name, spec, required, control, wrapper, errorNode };
}

/** The field's value: `{value}`, `{}` to leave it out, or `{problem}`. */
function readField(f, single) {
  const { kind, values } = f.spec;
  const raw = f.control.value;
  const empty = raw.trim() === '';
  if (kind === 'boolean') return { value: f.control.checked };
  if (empty && kind !== 'string' && kind !== 'free') {
    if (f.control.validity?.badInput) return { problem: 'Enter a number.' };
    return f.required || single ? { problem: 'This field is required.' } : {};
  }
  if (kind === 'string') return raw === '' && !f.required && !single ? {} : { value: raw };
  if (kind === 'enum') return { value: values[Number(raw)] };
  if (kind === 'integer' || kind === 'number') {
    const n = Number(raw);
    if (!Number.isFinite(n)) return { problem: 'Enter a number.' };
    if (kind === 'integer' && !Number.isInteger(n)) return { problem: 'Enter a whole number.' };
    return { value: n };
  }
  if (kind === 'free') {
    if (/^\s*[[{]/.test(raw)) {
      try {
        return { value: JSON.parse(raw) };
      } catch {
        // not JSON after all: it is text
      }
    }
    return { value: raw };
  }
  try {
    return { value: JSON.parse(raw) };
  } catch (err) {
    return { problem: `Not valid JSON: ${err.message}` };
  }
}

/**
 * A form for `schema` (null for a free answer). `idPrefix` makes the fields' ids unique on the
 * page; `base` is the name the server gives the whole value in an error's `details` (`input`,
 * `value`); problems not tied to a field go into `errorBox`. Returns `{node, read, showError,
 * clearErrors}`: `read()` is `{ok: true, value}`, or `{ok: false}` after showing what is wrong.
 */
export function schemaForm(schema, { idPrefix, base, errorBox, legend }) {
  const node = el('fieldset', { className: 'fields' }, el('legend', { className: 'visually-hidden', text: legend }));
  const root = isPlainObject(schema) ? schema : {};
  const top = resolve(root, root);
  const fields = [];
  let single = false;
  if (isPlainObject(top.properties)) {
    const required = new Set(Array.isArray(top.required) ? top.required : []);
    for (const [name, sub] of Object.entries(top.properties)) {
      const spec = specOf(sub, root);
      const label = spec.schema.title ? String(spec.schema.title) : humanize(name);
      const id = `${idPrefix}${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
      fields.push(buildField(name, spec, { id, label, required: required.has(name) }));
    }
    if (!fields.length) node.append(el('p', { className: 'help', text: 'Nothing to fill in.' }));
  } else {
    single = true;
    const spec = schema == null || !Object.keys(top).length ? { kind: 'free', schema: {} } : specOf(top, root);
    const label = top.title ? String(top.title) : 'Answer';
    fields.push(buildField('', spec, { id: `${idPrefix}answer`, label, required: true }));
  }
  for (const f of fields) node.append(f.wrapper);

  function clearErrors() {
    clear(errorBox);
    errorBox.hidden = true;
    for (const f of fields) {
      f.errorNode.hidden = true;
      f.errorNode.textContent = '';
      f.control.removeAttribute('aria-invalid');
      f.wrapper.classList.remove('has-error');
    }
  }

  function mark(f, message) {
    f.errorNode.textContent = [f.errorNode.textContent, message].filter(Boolean).join(' ');
    f.errorNode.hidden = false;
    f.control.setAttribute('aria-invalid', 'true');
    f.wrapper.classList.add('has-error');
  }

  /** The field a server's detail names (`value.scale` → scale; `value` → the single field). */
  function fieldOf(path) {
    const parts = String(path ?? '').split('.');
    if (parts[0] !== base) return null;
    if (single) return parts.length === 1 ? fields[0] : null;
    return fields.find((f) => f.name === parts[1]) ?? null;
  }

  /** Show a refusal: its message at the top, each detail next to its field (or listed). */
  function showError(err) {
    clearErrors();
    const list = el('ul', { className: 'form-error-list' });
    let first = null;
    for (const d of Array.isArray(err.details) ? err.details : []) {
      const message = String(d?.message ?? toJson(d, 0));
      const f = fieldOf(d?.field);
      if (f) {
        mark(f, message);
        first ??= f;
      } else {
        const where = d?.field ? [el('code', { text: String(d.field) }), ': '] : [];
        list.append(el('li', {}, ...where, message));
      }
    }
    errorBox.append(el('p', { className: 'form-error-title', text: err.message || 'That was refused.' }));
    if (list.children.length) errorBox.append(list);
    errorBox.hidden = false;
    first?.control.focus();
  }

  function read() {
    clearErrors();
    const value = {};
    const problems = [];
    for (const f of fields) {
      const got = readField(f, single);
      if ('problem' in got) problems.push({ field: base + (single ? '' : `.${f.name}`), message: got.problem });
      else if ('value' in got) {
        if (single) return { ok: true, value: got.value };
        value[f.name] = got.value;
      }
    }
    if (problems.length) {
      showError({ message: 'Fix the highlighted fields.', details: problems });
      return { ok: false };
    }
    return { ok: true, value };
  }

  return { node, read, showError, clearErrors };
}
