/**
 * Label values come from the kernel and the filesystem (process names,
 * cgroup paths): untrusted. They are made well-formed UTF-16 (so they encode
 * as valid UTF-8), and cut to a byte limit. Escaping for the exposition
 * format is the renderer's job (prom-client escapes \, " and newline).
 */

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const decoder = new TextDecoder('utf-8', { fatal: false });

/** Decodes kernel bytes (e.g. a comm[16]) up to the first NUL; invalid UTF-8 becomes U+FFFD. */
export function decodeCString(bytes: Uint8Array): string {
  const nul = bytes.indexOf(0);
  return decoder.decode(nul >= 0 ? bytes.subarray(0, nul) : bytes);
}

export function sanitizeLabelValue(value: string, maxBytes: number): string {
  let v = value.replace(LONE_SURROGATE, '\uFFFD');
  if (Buffer.byteLength(v, 'utf8') <= maxBytes) return v;
  // Cut on a code point boundary, leaving room for the marker.
  const budget = maxBytes - 3;
  let bytes = 0;
  let end = 0;
  for (const ch of v) {
    const n = Buffer.byteLength(ch, 'utf8');
    if (bytes + n > budget) break;
    bytes += n;
    end += ch.length;
  }
  v = `${v.slice(0, end)}…`;
  return v;
}
