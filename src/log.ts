/** Structured logs (pino, JSON lines on stderr). Secrets never reach them: see `redact`. */
import { pino, destination, stdTimeFunctions, type Logger } from 'pino';

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(level: LogLevel): Logger {
  return pino(
    {
      level,
      base: { app: 'kerntap' },
      redact: {
        paths: ['headers', '*.headers', 'authorization', '*.authorization', 'password', '*.password', 'config.otlp.headers'],
        censor: '[redacted]',
      },
      timestamp: stdTimeFunctions.isoTime,
    },
    destination({ fd: 2, sync: true }),
  );
}
