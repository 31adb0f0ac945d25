// Small DOM helpers shared by the micro-frontends. Text always goes in as text, never as HTML.

/** h('button', { type: 'button', onclick: fn, class: 'x' }, 'Label', child, ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Shows the server's errors next to the fields they name, and the rest in the form's alert. */
export function showFormError(form, err) {
  clearFormErrors(form);
  // Anything but an ApiError is a bug or a lost connection: still say something readable.
  if (typeof err?.detail !== 'string') err = { detail: String(err?.message ?? err), field: null, message: String(err?.message ?? err) };
  const field = err.field && form.elements.namedItem(err.field);
  const guess = !field && guessField(form, err.detail);
  const target = field || guess;
  if (target && target.id) {
    const msg = document.getElementById(`${target.id}-error`);
    if (msg) {
      const text = field ? err.message : err.detail;
      msg.textContent = text.charAt(0).toUpperCase() + text.slice(1);
      target.setAttribute('aria-invalid', 'true');
      target.focus();
      return;
    }
  }
  const alert = form.querySelector('[role="alert"]');
  if (alert) alert.textContent = err.detail.charAt(0).toUpperCase() + err.detail.slice(1);
}

function guessField(form, detail) {
  // "email already registered", "username already taken", "invalid email or password".
  for (const name of ['email', 'username', 'old_password', 'password']) {
    const el = form.elements.namedItem(name);
    if (el && new RegExp(`^${name.replace('_', ' ')}\\b`).test(detail)) return el;
  }
  return null;
}

export function clearFormErrors(form) {
  for (const el of form.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.field-error, [role="alert"]')) el.textContent = '';
}

/** Disables a form's controls while `work` runs. */
export async function busy(form, work) {
  const controls = [...form.querySelectorAll('button, input, textarea, select')].filter((c) => !c.disabled);
  for (const c of controls) c.disabled = true;
  form.setAttribute('aria-busy', 'true');
  try { return await work(); } finally {
    for (const c of controls) c.disabled = false;
    form.removeAttribute('aria-busy');
  }
}

export function displayName(u) {
  if (!u) return 'Someone';
  return [u.first_name, u.last_name].filter(Boolean).join(' ') || u.username || 'Someone';
}
