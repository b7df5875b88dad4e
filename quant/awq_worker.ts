/**
 * Worker side of {@linkcode awqQuantizeModelParallel}: serves
 * {@linkcode awqTasks} (a few scale ratios' losses, or a block of rows' clipping
 * values) through model/pool.ts.
 *
 * @module
 */
import { serveTasks } from "../model/pool.ts";
import { awqTasks } from "./awq.ts";

serveTasks(awqTasks);
