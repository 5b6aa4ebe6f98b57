/**
 * Command line, following exporter conventions (--web.listen-address,
 * --config.file, …). Flags override the config file, which overrides the
 * built-in defaults.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import closeWithGrace from 'close-with-grace';
import { checkAll, Kerntap, StartupError } from './app.js';
import { ConfigError, DEFAULT_LISTEN_ADDRESS, DEFAULT_TELEMETRY_PATH, loadConfigFile, type Config } from './config.js';
import { parseDuration } from './duration.js';
import { createLogger, LOG_LEVELS, type LogLevel } from './log.js';
import { formatProbeTable } from './probe.js';
import { loadWebConfig, type WebConfig } from './webconfig.js';
import { VERSION } from './version.js';
import { SORT_KEYS, type SortKey } from './top/model.js';

interface Flags {
  configFile?: string;
  webConfigFile?: string;
  listenAddress?: string;
  telemetryPath?: string;
  pollInterval?: number;
  logLevel: LogLevel;
  check?: boolean;
}

function durationArg(value: string): number {
  try {
    return parseDuration(value);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

export function buildProgram(): Command {
  return new Command('kerntap')
    .description('eBPF metrics exporter: per-cgroup CPU and TCP metrics for Prometheus and OTLP')
    .version(VERSION, '--version', 'print the version and exit')
    .helpOption('-h, --help', 'show this help')
    .addOption(new Option('--config.file <path>', 'YAML configuration file (default: built-in defaults)'))
    .addOption(new Option('--web.listen-address <[host]:port>', `address to serve metrics on (default: ${DEFAULT_LISTEN_ADDRESS})`))
    .addOption(new Option('--web.config.file <path>', 'TLS and basic auth for the endpoints, in the exporter-toolkit format (tls_server_config, basic_auth_users)'))
    .addOption(new Option('--web.telemetry-path <path>', `path of the metrics endpoint (default: ${DEFAULT_TELEMETRY_PATH})`))
    .addOption(new Option('--poll.interval <duration>', 'how often BPF maps are read, e.g. 5s (default: 5s)').argParser(durationArg))
    .addOption(new Option('--log.level <level>', 'log level').choices([...LOG_LEVELS]).default('info'))
    .addOption(new Option('--check', 'probe privileges, BTF and each collector\'s hooks, print the table and exit (0: all enabled collectors can run)'))
    .configureOutput({ outputError: (str, write) => write(`kerntap: ${str.replace(/^error: /, '')}`) })
    .showSuggestionAfterError(true)
    .allowExcessArguments(false)
    .action(() => undefined); // no subcommand: the exporter (main() goes on)
}

export interface TopFlags {
  once?: boolean;
  output: 'table' | 'json';
  interval: number;
  sort: SortKey;
  filter?: string;
  maxSockets: number;
}

function maxSocketsArg(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 16 || Number(value) > 4_194_304) throw new InvalidArgumentError('must be an integer from 16 to 4194304');
  return Number(value);
}

/** `kerntap top`: its own programs, loaded while the view is open (docs/top.md). */
export function addTopCommand(program: Command, onTop: (flags: TopFlags) => void): Command {
  program
    .command('top')
    .description('live view of TCP connections and connect/accept/close events, from the kernel (loads its own programs while it runs)')
    .helpOption('-h, --help', 'show this help')
    .addOption(new Option('--once', 'print one snapshot (two samples one --interval apart) and exit'))
    .addOption(new Option('--output <format>', 'table (a terminal view, or plain text when stdout is not a terminal) or json (with --once one document, else one line per refresh)').choices(['table', 'json']).default('table'))
    .addOption(new Option('--interval <duration>', 'refresh interval, e.g. 1s').argParser(durationArg).default(1000, '1s'))
    .addOption(new Option('--sort <key>', 'sort connections by').choices([...SORT_KEYS]).default('rate'))
    .addOption(new Option('--filter <text>', 'show only connections and events matching: text (comm, container, peer or port), or port:N, comm:X, container:X, peer:X'))
    .addOption(new Option('--max-sockets <n>', 'sockets whose owner (pid, comm, cgroup) is remembered; least recently used go first').argParser(maxSocketsArg).default(65_536))
    .allowExcessArguments(false)
    .action((opts: Record<string, unknown>) => {
      onTop({
        once: opts.once as boolean | undefined,
        output: opts.output as 'table' | 'json',
        interval: opts.interval as number,
        sort: opts.sort as SortKey,
        filter: opts.filter as string | undefined,
        maxSockets: opts.maxSockets as number,
      });
    });
  return program;
}

function readFlags(program: Command): Flags {
  const o = program.opts<Record<string, unknown>>();
  return {
    configFile: o['config.file'] as string | undefined,
    webConfigFile: o['web.config.file'] as string | undefined,
    listenAddress: o['web.listenAddress'] as string | undefined,
    telemetryPath: o['web.telemetryPath'] as string | undefined,
    pollInterval: o['poll.interval'] as number | undefined,
    logLevel: (o['log.level'] as LogLevel | undefined) ?? 'info',
    check: o['check'] as boolean | undefined,
  };
}

export function applyFlags(config: Config, flags: Flags): Config {
  const c = structuredClone(config);
  if (flags.listenAddress) c.web.listen_address = flags.listenAddress;
  if (flags.telemetryPath) {
    if (!/^\/[A-Za-z0-9._~\-/]*$/.test(flags.telemetryPath)) {
      throw new ConfigError(`--web.telemetry-path ${JSON.stringify(flags.telemetryPath)}: must be an absolute URL path such as /metrics`);
    }
    c.web.telemetry_path = flags.telemetryPath;
  }
  if (flags.pollInterval !== undefined) {
    if (flags.pollInterval < 100) throw new ConfigError('--poll.interval must be at least 100ms');
    c.poll.interval = flags.pollInterval;
  }
  return c;
}

function fail(message: string): never {
  process.stderr.write(`kerntap: ${message}\n`);
  process.exit(1);
}

export async function main(argv: string[]): Promise<void> {
  let top: TopFlags | undefined;
  const program = addTopCommand(buildProgram(), (f) => (top = f));
  await program.parseAsync(argv);
  if (top) return mainTop(program, top);
  let flags: Flags;
  let config: Config;
  let web: WebConfig | undefined;
  try {
    flags = readFlags(program);
    config = applyFlags(loadConfigFile(flags.configFile), flags);
    if (flags.webConfigFile) web = loadWebConfig(flags.webConfigFile);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }

  if (flags.check) {
    const probe = await checkAll(config, createLogger(flags.logLevel));
    process.stdout.write(`${formatProbeTable(probe.rows)}\n`);
    const enabled = probe.rows.filter((r) => !r.reason.startsWith('disabled in config'));
    process.exit(enabled.length > 0 && enabled.every((r) => r.enabled) ? 0 : 1);
  }

  const log = createLogger(flags.logLevel);
  // Signal handlers go in before start: a SIGTERM that arrives right after
  // "kerntap listening" must still detach everything and flush OTLP.
  let starting: Promise<Kerntap | undefined> | undefined;
  closeWithGrace({ delay: 5000 }, async ({ signal, err }) => {
    if (err) log.error({ err: err.message }, 'fatal error, shutting down');
    else log.info({ signal }, 'shutting down');
    await (await starting)?.close();
  });
  starting = Kerntap.start(config, log, web ? { web } : {}).catch((err: unknown) => {
    if (err instanceof StartupError || err instanceof ConfigError) fail(err.message);
    fail((err as Error).message.split('\n')[0] ?? String(err));
  });
  await starting;
}

/** Ring buffer of top's events: 4 MiB hold about 30 000 events between two drains (every 100 ms); more are counted as lost. */
const TOP_RING_BYTES = 4 << 20;

async function mainTop(program: Command, flags: TopFlags): Promise<void> {
  let config: Config;
  try {
    if (flags.interval < 100) throw new ConfigError('--interval must be at least 100ms');
    config = loadConfigFile(readFlags(program).configFile);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  try {
    // Loaded here, not at start: the exporter never needs the view's code.
    const { runTop } = await import('./top/run.js');
    const code = await runTop({
      once: flags.once ?? false, output: flags.output, intervalMs: flags.interval, sort: flags.sort,
      filter: flags.filter, maxSockets: flags.maxSockets, ringBytes: TOP_RING_BYTES, config,
    });
    process.exit(code);
  } catch (err) {
    fail(`top: ${(err as Error).message.split('\n')[0]}`);
  }
}
