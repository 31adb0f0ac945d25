// The API client every micro-frontend gets: JSON in, JSON out, the session cookie goes along
// (same origin), and every failure becomes an ApiError with the server's error shape.

export class ApiError extends Error {
  constructor({ code = 0, detail = 'network error', status = '', id = '' } = {}) {
    super(detail);
    this.code = code;
    this.detail = detail;
    this.status = status;
    this.requestId = id;
    // "email: must be a valid address" names its field; so does "ids[0]: ..." or "nested.when: ...".
    const m = /^([a-z_][a-z0-9_]*)(?:\[\d+\])?(?:\.[a-z_]+)*: /i.exec(detail);
    this.field = m ? m[1] : null;
    this.message = m ? detail.slice(m[0].length) : detail;
  }
  get isNetwork() { return this.code === 0; }
}

export function createApiClient({ onUnauthorized } = {}) {
  async function send(url, init) {
    let res;
    try {
      res = await fetch(url, { credentials: 'same-origin', ...init });
    } catch (e) {
      throw new ApiError({ code: 0, detail: 'cannot reach the server' });
    }
    let body = null;
    const text = await res.text();
    if (text) {
      try { body = JSON.parse(text); } catch { body = null; }
    }
    if (!res.ok) {
      const err = new ApiError(body && typeof body.detail === 'string'
        ? body : { code: res.status, detail: res.statusText || 'request failed', status: res.statusText });
      if (res.status === 401 && onUnauthorized) onUnauthorized(err, url);
      throw err;
    }
    return body ?? {};
  }

  return {
    /** POST /v1/{service}/{Method}: `call('threads/CreateMessage', {...})`. */
    call(method, body = {}, { signal, keepalive = false } = {}) {
      // A JSON content type on every call: a cross-site form cannot send one, so together with
      // the SameSite cookie it keeps cookie-authenticated calls safe from request forgery.
      return send(`/v1/${method}`, {
        method: 'POST', signal, keepalive,
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(body),
      });
    },
    /** GET a page view, e.g. `/api/groups/{id}`. */
    page(path, { signal } = {}) {
      return send(path, { method: 'GET', signal, headers: { Accept: 'application/json' } });
    },
  };
}
