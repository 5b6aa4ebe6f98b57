/**
 * Which exposition a scrape gets, by its Accept header with q-values as
 * Prometheus sends it (scrape_protocols), e.g.
 *   application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,
 *   application/openmetrics-text;version=1.0.0;q=0.4,text/plain;version=0.0.4;q=0.3,*\/*;q=0.1
 * and the per-snapshot cache of each rendering.
 */
import type { Snapshot } from '../model/snapshot.js';
import { CONTENT_TYPES as TEXT_CONTENT_TYPES, renderExposition } from './prometheus.js';

/**
 * The protobuf exposition (protobufjs and the client_model schema, ~9 MB of
 * RSS) is loaded by the first scrape that asks for it: Prometheus asks only
 * when native histograms are on, and most scrapes never do. That first
 * scrape pays the load once (~50 ms here, the event loop blocked).
 */
type ProtoModule = typeof import('./prometheus-proto.js');
let proto: Promise<ProtoModule> | undefined;
const loadProto = (): Promise<ProtoModule> => (proto ??= import('./prometheus-proto.js'));

/** As prometheus-proto.ts sends it (test/unit/prometheus-proto.test.ts checks the two agree). */
const PROTOBUF_CONTENT_TYPE = 'application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited';

export type ScrapeFormat = 'text' | 'openmetrics' | 'protobuf';

export const CONTENT_TYPES: Record<ScrapeFormat, string> = { ...TEXT_CONTENT_TYPES, protobuf: PROTOBUF_CONTENT_TYPE };

/** On equal q: an exact media type over a wildcard, then protobuf, OpenMetrics, text. */
const PREFERENCE: ScrapeFormat[] = ['text', 'openmetrics', 'protobuf'];

/** The format one media range of an Accept header names, if kerntap serves it; `wildcard` when it is * / * or text/*. */
function formatOf(type: string, params: Map<string, string>): { format: ScrapeFormat; wildcard: boolean } | undefined {
  const version = params.get('version');
  switch (type) {
    case 'application/vnd.google.protobuf':
      return params.get('proto') === 'io.prometheus.client.MetricFamily' && params.get('encoding') === 'delimited' ? { format: 'protobuf', wildcard: false } : undefined;
    case 'application/openmetrics-text':
      return version === undefined || version === '1.0.0' || version === '0.0.1' ? { format: 'openmetrics', wildcard: false } : undefined;
    case 'text/plain':
      // 1.0.0 only adds UTF-8 names, and every kerntap name is ASCII.
      return version === undefined || version === '0.0.4' || version === '1.0.0' ? { format: 'text', wildcard: false } : undefined;
    case '*/*':
    case 'text/*':
      return { format: 'text', wildcard: true };
    default:
      return undefined;
  }
}

export function negotiateFormat(accept: string | undefined): ScrapeFormat {
  let best: { format: ScrapeFormat; q: number; wildcard: boolean } | undefined;
  for (const range of (accept ?? '').split(',')) {
    const [type = '', ...rest] = range.split(';').map((s) => s.trim());
    const params = new Map(rest.map((p) => {
      const eq = p.indexOf('=');
      return [p.slice(0, eq).trim().toLowerCase(), p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1')] as [string, string];
    }));
    const offer = formatOf(type.toLowerCase(), params);
    const q = params.has('q') ? Number(params.get('q')) : 1;
    if (!offer || !(q > 0)) continue;
    const better = !best || q > best.q || (q === best.q && (best.wildcard && !offer.wildcard
      || best.wildcard === offer.wildcard && PREFERENCE.indexOf(offer.format) > PREFERENCE.indexOf(best.format)));
    if (better) best = { ...offer, q };
  }
  return best?.format ?? 'text';
}

export function renderScrape(snapshot: Snapshot, format: ScrapeFormat): Promise<Buffer> {
  return format === 'protobuf' ? loadProto().then((m) => m.renderProtobuf(snapshot)) : renderExposition(snapshot, format);
}

/** Caches the rendering of the latest snapshot per format. */
export class ExpositionCache {
  private seq = -1;
  private readonly rendered = new Map<ScrapeFormat, Promise<Buffer>>();

  get(snapshot: Snapshot, format: ScrapeFormat): Promise<Buffer> {
    if (snapshot.seq !== this.seq) {
      this.seq = snapshot.seq;
      this.rendered.clear();
    }
    let out = this.rendered.get(format);
    if (!out) {
      out = renderScrape(snapshot, format);
      this.rendered.set(format, out);
    }
    return out;
  }
}
