/**
 * Worker module of model/pool_test.ts: serves {@linkcode squareTasks}.
 *
 * @module
 */
import { squareTasks } from "./_pool_test_tasks.ts";
import { serveTasks } from "./pool.ts";

serveTasks(squareTasks);
