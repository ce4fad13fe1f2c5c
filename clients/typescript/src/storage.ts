// Where the client persists positions and docs: a small synchronous
// key-value interface, and two implementations (memory, localStorage).

/** A synchronous string store. The client keeps each topic in one key,
 *  written whole (its position with its docs), so a reader finds one state
 *  of the cache, never parts of two. A write may throw (a full
 *  localStorage): the client then stops persisting that topic and forgets
 *  what it had of it. */
export interface SyncStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
  /** Every key set and not removed, in any order. */
  keys(): string[];
}

/** A storage that lives as long as the object: nothing survives a reload. */
export function memoryStorage(): SyncStorage {
  const items = new Map<string, string>();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => {
      items.set(key, value);
    },
    removeItem: (key) => {
      items.delete(key);
    },
    keys: () => [...items.keys()],
  };
}

/** The part of the Web Storage API this client uses. */
export interface WebStorage {
  readonly length: number;
  key(index: number): string | null;
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface LocalStorageOptions {
  /** Default: `globalThis.localStorage`. */
  storage?: WebStorage;
  /** Prepended to every key, so that the client's keys are told apart from
   *  the page's. Default: `"oasync:"`. */
  prefix?: string;
}

/** A storage over `localStorage` (or any Web Storage), its keys prefixed.
 *  Throws at once when there is no storage to use. */
export function localStorageStorage(options: LocalStorageOptions = {}): SyncStorage {
  const web =
    options.storage ?? (globalThis as { localStorage?: WebStorage | undefined }).localStorage;
  if (web === undefined) {
    throw new Error("localStorageStorage: there is no localStorage here; pass options.storage");
  }
  const prefix = options.prefix ?? "oasync:";
  return {
    getItem: (key) => web.getItem(prefix + key),
    setItem: (key, value) => web.setItem(prefix + key, value),
    removeItem: (key) => web.removeItem(prefix + key),
    keys: () => {
      const found: string[] = [];
      for (let i = 0; i < web.length; i += 1) {
        const key = web.key(i);
        if (key !== null && key.startsWith(prefix)) found.push(key.slice(prefix.length));
      }
      return found;
    },
  };
}
