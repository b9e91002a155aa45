/**
 * The logging surface the engines and edges use (pino's shape). Messages
 * carry ids and reasons, never payloads or presence values.
 */
export interface Log {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}
