/**
 * Worker side of {@linkcode perplexityBlockwise}: serves
 * {@linkcode blockwiseTasks} (embed, block, head steps of a part of a chunk)
 * through model/pool.ts.
 *
 * @module
 */
import { serveTasks } from "../model/pool.ts";
import { blockwiseTasks } from "./perplexity_blockwise.ts";

serveTasks(blockwiseTasks);
