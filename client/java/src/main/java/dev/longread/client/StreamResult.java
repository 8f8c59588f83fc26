package dev.longread.client;

import dev.longread.v1.AnalyzeResponse;
import dev.longread.v1.Plan;
import dev.longread.v1.StreamResponse;
import java.util.List;

/**
 * A Stream gathered by {@link LongreadClient#collect}.
 *
 * @param plan the first event: the work the job does
 * @param result the last event: what Analyze would have returned
 * @param events every event in order, the plan and result included
 */
public record StreamResult(Plan plan, AnalyzeResponse result, List<StreamResponse> events) {
  public StreamResult {
    events = List.copyOf(events);
  }
}
