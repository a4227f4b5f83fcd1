// crier JavaScript client, Server-Sent Events: the incremental `text/event-stream` parser
// the SSE transport reads with, and `readSse` for other streams (crier.js re-exports it).
// Split out of crier.js to keep the wire format apart from the subscription's logic.

/**
 * Incremental parser of a `text/event-stream` (WHATWG HTML, "server-sent events"): lines end
 * with CRLF, LF or CR; `data` lines join with LF; `event`, `id` (ignored if it holds NUL),
 * `retry` (digits only) and comments; a blank line dispatches, a message without data does not.
 */
export class SseParser {
  constructor({ message, comment, retry } = {}) {
    this.onMessage = message;
    this.onComment = comment;
    this.onRetry = retry;
    this.buf = "";
    this.data = [];
    this.event = "";
    this.lastId = "";
    this.idInMessage = false;
  }

  push(text) {
    const buf = this.buf + text;
    let start = 0;
    let lf = -2;
    let cr = -2;
    for (;;) {
      if (lf !== -1 && lf < start) lf = buf.indexOf("\n", start);
      if (cr !== -1 && cr < start) cr = buf.indexOf("\r", start);
      if (lf === -1 && cr === -1) break;
      let end;
      let next;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        // A CR at the very end may be the first half of CRLF: wait for the next chunk.
        if (cr === buf.length - 1) break;
        end = cr;
        next = buf[cr + 1] === "\n" ? cr + 2 : cr + 1;
      } else {
        end = lf;
        next = lf + 1;
      }
      this.line(buf.slice(start, end));
      start = next;
    }
    this.buf = start === 0 ? buf : buf.slice(start);
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line[0] === ":") {
      this.onComment?.(line.slice(line[1] === " " ? 2 : 1));
      return;
    }
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id") {
      if (!value.includes("\0")) {
        this.lastId = value;
        this.idInMessage = true;
      }
    } else if (field === "retry") {
      if (/^[0-9]+$/.test(value)) this.onRetry?.(Number(value));
    }
  }

  dispatch() {
    const data = this.data;
    const event = this.event || "message";
    const hasId = this.idInMessage;
    this.data = [];
    this.event = "";
    this.idInMessage = false;
    if (data.length === 0) return;
    this.onMessage?.({ event, data: data.join("\n"), id: this.lastId || undefined, hasId });
  }
}

/**
 * Reads a `text/event-stream` response body to its end, calling `onMessage({event, data, id})`
 * for each message (for streams a subscription does not cover, such as a replay's).
 */
export async function readSse(response, onMessage, onComment) {
  const parser = new SseParser({ message: onMessage, comment: onComment });
  const decoder = new TextDecoder();
  const reader = response.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    parser.push(decoder.decode(value, { stream: true }));
  }
}
