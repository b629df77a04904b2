// One node's view parts (ledger, materializer, recorder, audit) over an
// in-process cluster node's store and content transfer, for the view's unit
// tests: what a peer's record does to the view, and what the view records.
#pragma once

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "proto/state_page.h"
#include "nodeagent/view/view_audit.h"
#include "nodeagent/view/view_ledger.h"
#include "nodeagent/view/view_materializer.h"
#include "nodeagent/view/view_recorder.h"
#include "tests/unit/in_process_cluster.h"

namespace onebox::testing {

struct ViewParts {
  ViewParts(InProcessNode& node, const std::string& view_root) : page{} {
    page.magic = StatePage::kMagic;
    ledger = std::make_unique<ViewLedger>(*node.store, page);
    materializer = std::make_unique<ViewMaterializer>(*node.store, *node.content, *ledger);
    audit = std::make_unique<ViewAudit>(*node.store, *ledger, view_root,
                                        [m = materializer.get()](const std::string& key) { m->Enqueue(key); });
    EXPECT_TRUE(materializer->Start(view_root).ok());
    Result<std::unique_ptr<ViewRecorder>> r =
        ViewRecorder::Start(view_root, *node.store, *ledger, nullptr, [m = materializer.get()] { m->Drain(); });
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    recorder = std::move(r).value();
  }
  ~ViewParts() {  // threads first: each calls into the others
    audit->Stop();
    recorder->Stop();
    materializer->Stop();
  }
  StatePage page;  // the shim's view of the ledger (its stubs count)
  std::unique_ptr<ViewLedger> ledger;
  std::unique_ptr<ViewMaterializer> materializer;
  std::unique_ptr<ViewRecorder> recorder;
  std::unique_ptr<ViewAudit> audit;
};

}  // namespace onebox::testing
