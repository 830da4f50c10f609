// An event emitter that delivers asynchronously and in order. Events are queued and handed to
// the listeners later, never from inside the call that produced them; while held, nothing is
// delivered at all. A room is held until connect() has resolved, so the frames that arrive with
// the welcome (the resume replay, the presence state) reach handlers attached right after
// `await connect(...)`.

type Listener<T> = (event: T) => void;

export class Emitter<Events> {
  #listeners = new Map<keyof Events, Set<Listener<never>>>();
  #queue: Array<() => void> = [];
  #held = true;
  #scheduled = false;

  /** on adds a listener and returns a function that removes it. */
  on<K extends keyof Events>(type: K, fn: Listener<Events[K]>): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(fn as Listener<never>);
    return () => this.off(type, fn);
  }

  off<K extends keyof Events>(type: K, fn: Listener<Events[K]>): void {
    this.#listeners.get(type)?.delete(fn as Listener<never>);
  }

  /**
   * emit queues an event. before runs just before the listeners see it, so state the event
   * changes (a room's seq) changes when the application learns of it, not earlier.
   */
  emit<K extends keyof Events>(type: K, event: Events[K], before?: () => void): void {
    this.#queue.push(() => {
      before?.();
      for (const fn of [...(this.#listeners.get(type) ?? [])]) {
        try {
          (fn as Listener<Events[K]>)(event);
        } catch (err) {
          // A throwing listener must not stop the others, nor the room: it is reported the way
          // an uncaught error is, outside this loop.
          queueMicrotask(() => {
            throw err;
          });
        }
      }
    });
    this.#schedule();
  }

  /** release starts delivery, in a later task than the caller's. */
  release(): void {
    this.#held = false;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#held || this.#scheduled || this.#queue.length === 0) return;
    this.#scheduled = true;
    setTimeout(() => this.#flush(), 0);
  }

  #flush(): void {
    this.#scheduled = false;
    // Listeners may emit; those events join the end of the queue and are delivered in this pass.
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      for (const deliver of batch) deliver();
    }
  }
}
