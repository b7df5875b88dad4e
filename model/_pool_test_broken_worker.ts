/**
 * A worker module for model/pool_test.ts that fails while loading.
 *
 * @module
 */
throw new Error("this worker module fails to load on purpose");
