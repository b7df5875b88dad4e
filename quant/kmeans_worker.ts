/**
 * Worker side of {@linkcode squeezellmQuantize}: serves
 * {@linkcode lutRowTasks} (a block of rows → fp16 LUTs and packed codes,
 * transferred) through model/pool.ts.
 *
 * @module
 */
import { serveTasks } from "../model/pool.ts";
import { lutRowTasks } from "./squeezellm.ts";

serveTasks(lutRowTasks);
