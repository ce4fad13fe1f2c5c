// @openagents/oasync-client: a client of oasync's sync:v1 channel. The
// React hooks are in the `@openagents/oasync-client/react` entry point.
export { createSyncClient, CHANNEL_PREFIX } from "./client.js";
export type { SyncClient, SyncClientOptions } from "./client.js";
export type { JsonValue, SyncDoc, TopicStatus } from "./cache.js";
export { SyncError } from "./errors.js";
export type { SyncErrorCode } from "./errors.js";
export { localStorageStorage, memoryStorage } from "./storage.js";
export type { LocalStorageOptions, SyncStorage, WebStorage } from "./storage.js";
export type { Position } from "./positions.js";
export type { FetchFunction } from "./doc-fetch.js";
export type {
  PhoenixChannel,
  PhoenixMessage,
  PhoenixPush,
  PhoenixSocket,
  SocketFactory,
  SocketSettings,
} from "./socket.js";
export { docStore, statusStore, topicStore } from "./stores.js";
export type { ExternalStore } from "./stores.js";
