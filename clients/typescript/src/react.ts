// React bindings (`@openagents/oasync-client/react`): a provider for the
// client, and hooks over `useSyncExternalStore`. The core entry point never
// imports React.
import {
  createContext,
  createElement,
  useContext,
  useEffect,
  useMemo,
  useSyncExternalStore,
  type ReactNode,
} from "react";

import type { SyncDoc, TopicStatus } from "./cache.js";
import type { SyncClient } from "./client.js";
import { docStore, statusStore, topicStore } from "./stores.js";

const SyncClientContext = createContext<SyncClient | null>(null);

/** Makes `client` the one the hooks below use. */
export function SyncProvider(props: { client: SyncClient; children?: ReactNode }): ReactNode {
  return createElement(SyncClientContext.Provider, { value: props.client }, props.children);
}

/** The client of the nearest SyncProvider; throws outside of one. */
export function useSyncClient(): SyncClient {
  const client = useContext(SyncClientContext);
  if (client === null)
    throw new Error("useSyncClient: no <SyncProvider client={...}> above this component");
  return client;
}

/** The doc `key` (of `topic`, or of any subscribed topic); undefined until
 *  it arrives. It does not subscribe a topic: `useTopic` or
 *  `client.subscribe` does. */
export function useDoc(key: string, topic?: string): SyncDoc | undefined {
  const client = useSyncClient();
  const store = useMemo(() => docStore(client, key, topic), [client, key, topic]);
  return useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
}

/** Subscribes `topic` while the component is mounted, and gives its docs
 *  (sorted by key), or `select(docs)`, recomputed when the docs or `select`
 *  change (pass a stable `select`, e.g. from useCallback, to compute it once
 *  per change). During a resync the old docs are given until the new
 *  snapshot is complete. */
export function useTopic(topic: string): readonly SyncDoc[];
export function useTopic<T>(topic: string, select: (docs: readonly SyncDoc[]) => T): T;
export function useTopic<T>(
  topic: string,
  select?: (docs: readonly SyncDoc[]) => T,
): T | readonly SyncDoc[] {
  const client = useSyncClient();
  useEffect(() => client.subscribe(topic), [client, topic]);
  const store = useMemo(() => topicStore(client, topic), [client, topic]);
  const docs = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  return useMemo(() => (select === undefined ? docs : select(docs)), [docs, select]);
}

/** Where `topic` stands (undefined while it is not subscribed). */
export function useTopicStatus(topic: string): TopicStatus | undefined {
  const client = useSyncClient();
  const store = useMemo(() => statusStore(client, topic), [client, topic]);
  return useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
}

export type { SyncDoc, TopicStatus } from "./cache.js";
export type { SyncClient } from "./client.js";
