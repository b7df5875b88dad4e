/**
 * Worker side of {@linkcode awqQuantizeModelParallel}: serves
 * {@linkcode awqTasks} (a scale ratio's loss, or a block of rows' clipping
 * values) through model/pool.ts.
 *
 * @module
 */
import { serveTasks } from "../model/pool.ts";
import { awqTasks } from "./awq.ts";

serveTasks(awqTasks);
