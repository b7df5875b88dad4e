/**
 * Worker side of {@linkcode perplexity}: serves {@linkcode perplexityTasks}
 * (window index → nll) through model/pool.ts.
 *
 * @module
 */
import { serveTasks } from "../model/pool.ts";
import { perplexityTasks } from "./perplexity.ts";

serveTasks(perplexityTasks);
