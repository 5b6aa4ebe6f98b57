/** A configuration problem, reported as one line naming the file, key or variable. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}
