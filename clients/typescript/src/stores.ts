// External stores over a SyncClient, in the shape `useSyncExternalStore`
// takes: `subscribe(onChange)` and `getSnapshot()`, where a snapshot is the
// same object until what it shows changes. Framework-free: the React hooks
// are a few lines over these.
import type { SyncDoc, TopicStatus } from "./cache.js";
import type { SyncClient } from "./client.js";

export interface ExternalStore<T> {
  /** Calls `onChange` when the snapshot may have changed; returns its removal. */
  subscribe(onChange: () => void): () => void;
  getSnapshot(): T;
}

// Changes of `topic`, or of any topic when it is undefined.
function changesOf(client: SyncClient, topic: string | undefined) {
  return (onChange: () => void) =>
    client.onChange((changed) => {
      if (topic === undefined || changed === topic) onChange();
    });
}

/** The doc `key` (of `topic`, or of any subscribed topic). */
export function docStore(
  client: SyncClient,
  key: string,
  topic?: string,
): ExternalStore<SyncDoc | undefined> {
  return { subscribe: changesOf(client, topic), getSnapshot: () => client.getDoc(key, topic) };
}

/** The docs of `topic`, sorted by key. */
export function topicStore(client: SyncClient, topic: string): ExternalStore<readonly SyncDoc[]> {
  return { subscribe: changesOf(client, topic), getSnapshot: () => client.getDocs(topic) };
}

/** The status of `topic` (undefined while it is not subscribed). */
export function statusStore(
  client: SyncClient,
  topic: string,
): ExternalStore<TopicStatus | undefined> {
  return { subscribe: changesOf(client, topic), getSnapshot: () => client.getStatus(topic) };
}
